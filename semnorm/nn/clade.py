"""CLADE: class-adaptive normalization (Tan et al. 2021), with instance edges and ICPE, on semnorm's ops."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import nn

from .. import functional as F
from .. import reference
from ._inputs import instance_edges, split_semantic_input
from .norm import ParamFreeNorm


class ClassSpecifiedAffine(nn.Module):
    """The per-class parameter bank of a CLADE layer (published ``class_specified_affine``).

    Holds ``weight`` (L, C), init U(0, 1), and ``bias`` (L, C), init 0; with ``positional=True`` also
    ``dist_conv_w`` and ``dist_conv_b``, each ``Conv2d(2 -> 1, 1x1)`` with zero weight and bias (so
    ICPE starts as plain CLADE), as in the published code. The computation lives in :class:`CLADE`.
    """

    def __init__(self, label_nc: int, num_features: int, positional: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(label_nc, num_features).uniform_(0.0, 1.0))
        self.bias = nn.Parameter(torch.zeros(label_nc, num_features))
        if positional:
            self.dist_conv_w = nn.Conv2d(2, 1, kernel_size=1)
            self.dist_conv_b = nn.Conv2d(2, 1, kernel_size=1)
            for conv in (self.dist_conv_w, self.dist_conv_b):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def extra_repr(self) -> str:
        return f"label_nc={self.weight.shape[0]}, num_features={self.weight.shape[1]}"


class CLADE(nn.Module):
    """``y = N(x) * gamma + beta`` with ``gamma = weight[label]``, ``beta = bias[label]`` (CLADE sec. 3.2).

    The class bank is indexed by label inside one fused kernel (:func:`semnorm.functional.class_modulate`):
    no one-hot map, no dense gamma/beta. Parameter and buffer names are those of the published CLADE
    layer (``param_free_norm.*``, ``class_specified_affine.weight`` / ``.bias`` (L, C),
    ``class_specified_affine.dist_conv_w`` / ``.dist_conv_b`` with ICPE, ``inst_conv`` with instance
    edges), so its checkpoints load with ``load_state_dict(strict=True)``.

    Args:
        num_features: channels C of x.
        label_nc: number of classes L (including the don't-care class where the dataset has one).
        norm: "batch", "instance" or "syncbatch".
        edge: instance edges (CLADE eq. 2): ``inst_conv`` (Conv2d(1 -> 1, 1x1)) on the edge map resized
            (nearest) to x's size is concatenated to y as one extra channel, so the layer returns C + 1
            channels, like the published layer.
        positional: CLADE-ICPE (sec. 3.4): ``gamma' = gamma * (1 + dist_conv_w(D))``,
            ``beta' = beta * (1 + dist_conv_b(D))`` with D the 2-channel intra-class positional map,
            computed on the fly from the labels (at the labels' resolution, then resized nearest to x's
            size) unless given as ``positional_map``.
        ignore_label: label whose pixels get D = 0 when D is computed from the labels (ICPE only).
            Default 0, as in the published preprocessing, which skips label 0; None ignores nothing.
        impl: semnorm implementation for every op ("native", "triton", "reference" or None: automatic).
    """

    def __init__(self, num_features: int, label_nc: int, norm: str = "batch", edge: bool = False,
                 positional: bool = False, ignore_label: int | None = 0, impl: str | None = None) -> None:
        super().__init__()
        if not isinstance(label_nc, int) or label_nc <= 0:
            raise ValueError(f"semnorm.CLADE: label_nc must be a positive int, got {label_nc!r}")
        self.num_features, self.label_nc = num_features, label_nc
        self.edge, self.positional, self.ignore_label, self.impl = bool(edge), bool(positional), ignore_label, impl
        self.param_free_norm = ParamFreeNorm(num_features, norm)
        self.class_specified_affine = ClassSpecifiedAffine(label_nc, num_features, positional)
        if self.edge:
            self.inst_conv = nn.Conv2d(1, 1, kernel_size=1)

    def positional_scales(self, labels: torch.Tensor, size: tuple[int, int], acc: torch.dtype,
                          positional_map: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """ICPE factors ``(1 + dist_conv_w(D), 1 + dist_conv_b(D))``, each (N, *size) in dtype ``acc``.

        D is ``positional_map`` (N, 2, Hd, Wd) when given, else computed from ``labels`` (N, Hl, Wl);
        either is resized (nearest) to ``size``.
        """
        if positional_map is None:
            d = F.intra_class_positional(labels, ignore_label=self.ignore_label, impl=self.impl)
        else:
            if not isinstance(positional_map, torch.Tensor) or positional_map.dim() != 4 \
                    or positional_map.shape[1] != 2 or positional_map.shape[0] != labels.shape[0]:
                raise ValueError(f"semnorm.CLADE: positional_map must be a (N={labels.shape[0]}, 2, H, W) tensor, "
                                 f"got {tuple(getattr(positional_map, 'shape', ()))}")
            d = positional_map
        affine = self.class_specified_affine
        d = d.to(affine.dist_conv_w.weight.dtype)
        if tuple(d.shape[-2:]) != tuple(size):
            d = TF.interpolate(d, size=tuple(size), mode="nearest")
        sg = 1 + affine.dist_conv_w(d)[:, 0]
        sb = 1 + affine.dist_conv_b(d)[:, 0]
        return sg.to(acc).contiguous(), sb.to(acc).contiguous()

    def modulation(self, labels: torch.Tensor, size: tuple[int, int], positional_map: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense ``(gamma, beta)``, each (N, C, *size) (with ICPE factors applied), for inspection.

        The forward never builds these; ``labels`` is an integer (N, Hl, Wl) map at any resolution.
        """
        affine = self.class_specified_affine
        lab = reference.sample_labels(labels, int(size[0]), int(size[1])).long()
        gamma = affine.weight[lab].permute(0, 3, 1, 2)
        beta = affine.bias[lab].permute(0, 3, 1, 2)
        if self.positional:
            sg, sb = self.positional_scales(labels, size, gamma.dtype, positional_map)
            gamma, beta = gamma * sg[:, None], beta * sb[:, None]
        return gamma, beta

    def forward(self, x: torch.Tensor, labels: torch.Tensor, edge: torch.Tensor | None = None,
                instance: torch.Tensor | None = None, positional_map: torch.Tensor | None = None) -> torch.Tensor:
        """Normalize and modulate x.

        Args:
            x: activations (N, C, H, W).
            labels: integer (N, Hl, Wl) map in [0, label_nc) at any resolution, or the published one-hot
                map (N, label_nc [+ 1 edge channel when edge=True], Hl, Wl).
            edge: (N, 1, He, We) instance-edge map (edge=True); overrides the one-hot's edge channel.
            instance: (N, Hi, Wi) or (N, 1, Hi, Wi) integer instance map, turned into an edge map with
                :func:`semnorm.nn._inputs.instance_edges` when no edge map is given (edge=True).
            positional_map: optional precomputed ICPE map D (N, 2, Hd, Wd) (positional=True).

        Returns:
            (N, C, H, W), or (N, C + 1, H, W) with edge=True, in x's dtype.
        """
        # ICPE needs the labels at full resolution; otherwise a one-hot map is sampled at x's size first
        size = None if self.positional or not (isinstance(x, torch.Tensor) and x.dim() == 4) else tuple(x.shape[-2:])
        labels, edge_map = split_semantic_input(labels, self.label_nc, self.edge, "CLADE", edge, size=size)
        if self.edge and edge_map is None:
            if instance is None:
                raise ValueError("semnorm.CLADE: this layer was built with edge=True and needs an edge map: pass "
                                 "edge (N, 1, H, W), instance (N, H, W), or a one-hot labels tensor with an edge channel")
            edge_map = instance_edges(instance)
        if positional_map is not None and not self.positional:
            raise ValueError("semnorm.CLADE: positional_map given but the layer was built with positional=False")
        acc = reference.opmath_dtype(x.dtype)
        mean, rstd, of_x = self.param_free_norm.stats(x, impl=self.impl)
        affine = self.class_specified_affine
        sg = sb = None
        if self.positional:
            sg, sb = self.positional_scales(labels, tuple(x.shape[-2:]), acc, positional_map)
        h, w = x.shape[-2:]
        if tuple(labels.shape[-2:]) != (h, w):
            # sample once at x's resolution (the nearest rule, exactly what the kernel does per pixel):
            # the forward and backward kernels then read a small contiguous map
            labels = reference.sample_labels(labels, h, w)
        y = F.class_modulate(x, mean, rstd, labels, affine.weight.to(acc), affine.bias.to(acc),
                             scale_gamma=sg, scale_beta=sb, offset=0.0, stats_of_x=of_x, impl=self.impl)
        if self.edge:
            if not isinstance(edge_map, torch.Tensor) or edge_map.dim() != 4 or edge_map.shape[1] != 1:
                raise ValueError(f"semnorm.CLADE: edge must be a (N, 1, H, W) tensor, got "
                                 f"{tuple(getattr(edge_map, 'shape', ()))}")
            e = TF.interpolate(edge_map.to(self.inst_conv.weight.dtype), size=tuple(x.shape[-2:]), mode="nearest")
            y = torch.cat((y, self.inst_conv(e).to(y.dtype)), dim=1)
        return y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, label_nc={self.label_nc}, norm={self.param_free_norm.norm!r}, "
                f"edge={self.edge}, positional={self.positional}")
