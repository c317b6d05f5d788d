"""Label inputs of the layers: an integer map, or the published one-hot semantic map."""

from __future__ import annotations

import torch

from .._checks import LABEL_DTYPES
from ..reference import nearest_indices


def split_semantic_input(
    labels: torch.Tensor, label_nc: int, edge: bool, layer: str, edge_map: torch.Tensor | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return ``(labels (N, H, W) integer, edge map (N, 1, H, W) or None)``.

    ``labels`` is either an integer map (N, H, W) with values in [0, label_nc) or, for drop-in use
    with published code, the one-hot semantic map (N, label_nc [+ 1 edge channel], H, W) that the
    SPADE-family data loaders produce; the class is its argmax over the first ``label_nc`` channels
    and, when the layer uses instance edges, the last channel is the edge map. With ``size``, a one-hot
    map at another resolution is first sampled at ``size`` with the nearest rule (one gather): the
    labels equal those sampled after the argmax, with the argmax run over ``size`` pixels only. Pass
    it only where the layer needs the labels at that size alone.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"semnorm.{layer}: labels must be a tensor, got {type(labels).__name__}")
    if labels.dim() == 4 and labels.is_floating_point():
        expected = label_nc + (1 if edge else 0)
        if labels.shape[1] != expected:
            raise ValueError(
                f"semnorm.{layer}: a one-hot labels tensor must have {expected} channels "
                f"(label_nc={label_nc}{' + 1 edge channel' if edge else ''}), got shape {tuple(labels.shape)}"
            )
        if size is not None and tuple(labels.shape[-2:]) != tuple(size):
            rows = nearest_indices(labels.shape[2], int(size[0]), labels.device)
            cols = nearest_indices(labels.shape[3], int(size[1]), labels.device)
            labels = labels[:, :, rows[:, None], cols[None, :]]
        if edge and edge_map is None:
            edge_map = labels[:, label_nc:]
        return labels[:, :label_nc].argmax(1), edge_map
    if labels.dim() != 3 or labels.dtype not in LABEL_DTYPES:
        raise ValueError(
            f"semnorm.{layer}: labels must be an integer (N, H, W) map or a float one-hot (N, L, H, W) map, "
            f"got dtype {labels.dtype} and shape {tuple(labels.shape)}"
        )
    return labels, edge_map


def instance_edges(instance: torch.Tensor) -> torch.Tensor:
    """Instance-boundary map of an instance-id map, as the SPADE-family data pipelines compute it.

    A pixel is 1 where its instance id differs from any of its 4 neighbours (both sides of a
    boundary are marked), else 0.

    Args:
        instance: (N, H, W) or (N, 1, H, W) instance ids (integer, or float holding integers).

    Returns:
        (N, 1, H, W) float32 edge map on instance's device.
    """
    if not isinstance(instance, torch.Tensor):
        raise TypeError(f"semnorm.instance_edges: instance must be a tensor, got {type(instance).__name__}")
    if instance.dim() == 4 and instance.shape[1] == 1:
        instance = instance[:, 0]
    if instance.dim() != 3 or instance.numel() == 0:
        raise ValueError(f"semnorm.instance_edges: instance must be a non-empty (N, H, W) or (N, 1, H, W) map, "
                         f"got shape {tuple(instance.shape)}")
    t = instance
    edge = torch.zeros(t.shape, dtype=torch.bool, device=t.device)
    dx = t[:, :, 1:] != t[:, :, :-1]
    dy = t[:, 1:, :] != t[:, :-1, :]
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    return edge.unsqueeze(1).to(torch.float32)
