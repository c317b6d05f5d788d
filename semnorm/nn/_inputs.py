"""Label inputs of the layers: an integer map, or the published one-hot semantic map."""

from __future__ import annotations

import torch

from .._checks import LABEL_DTYPES


def split_semantic_input(
    labels: torch.Tensor, label_nc: int, edge: bool, layer: str, edge_map: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return ``(labels (N, H, W) integer, edge map (N, 1, H, W) or None)``.

    ``labels`` is either an integer map (N, H, W) with values in [0, label_nc) or, for drop-in use
    with published code, the one-hot semantic map (N, label_nc [+ 1 edge channel], H, W) that the
    SPADE-family data loaders produce; the class is its argmax over the first ``label_nc`` channels
    and, when the layer uses instance edges, the last channel is the edge map.
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
        if edge and edge_map is None:
            edge_map = labels[:, label_nc:]
        return labels[:, :label_nc].argmax(1), edge_map
    if labels.dim() != 3 or labels.dtype not in LABEL_DTYPES:
        raise ValueError(
            f"semnorm.{layer}: labels must be an integer (N, H, W) map or a float one-hot (N, L, H, W) map, "
            f"got dtype {labels.dtype} and shape {tuple(labels.shape)}"
        )
    return labels, edge_map
