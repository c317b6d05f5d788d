"""SPADE: spatially-adaptive normalization (Park et al. 2019) on semnorm's ops."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import nn

from .. import functional as F
from ._inputs import split_semantic_input
from .norm import ParamFreeNorm


class SPADE(nn.Module):
    """``y = N(x) * (1 + gamma) + beta`` with ``gamma, beta = conv(relu(conv(onehot(labels))))``.

    Parameter and buffer names are those of the published SPADE layer (``param_free_norm.*``,
    ``mlp_shared.0.*``, ``mlp_gamma.*``, ``mlp_beta.*``), so its checkpoints load with
    ``load_state_dict(strict=True)``. The first convolution over the one-hot map is computed as a
    label-indexed gather of weight columns (:func:`semnorm.functional.label_conv`), exactly.

    Args:
        num_features: channels C of x.
        label_nc: number of classes L (including a don't-care class if the dataset has one).
        norm: "batch", "instance" or "syncbatch".
        kernel_size: kernel of the three convolutions (published: 3).
        hidden: channels of the shared hidden layer (published: 128).
        edge: whether the published input has an extra instance-edge channel (mlp_shared then takes
            ``label_nc + 1`` input channels; pass the edge map as ``edge`` or as the last one-hot channel).
        impl: semnorm implementation for every op ("native", "reference" or None: automatic).
    """

    def __init__(self, num_features: int, label_nc: int, norm: str = "batch", kernel_size: int = 3,
                 hidden: int = 128, edge: bool = False, impl: str | None = None) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"semnorm.SPADE: kernel_size must be odd, got {kernel_size}")
        self.num_features, self.label_nc, self.edge, self.impl = num_features, label_nc, edge, impl
        pad = kernel_size // 2
        self.param_free_norm = ParamFreeNorm(num_features, norm)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc + int(edge), hidden, kernel_size, padding=pad), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, num_features, kernel_size, padding=pad)
        self.mlp_beta = nn.Conv2d(hidden, num_features, kernel_size, padding=pad)

    def modulation(self, labels: torch.Tensor, size: tuple[int, int], edge: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense ``(gamma, beta)``, each (N, C, *size), from integer labels (N, Hl, Wl) at any resolution."""
        conv = self.mlp_shared[0]
        weight = conv.weight[:, : self.label_nc] if self.edge else conv.weight
        hidden = F.label_conv(labels, weight, conv.bias, size=tuple(size), impl=self.impl)
        if self.edge:
            if edge is None:
                raise ValueError("semnorm.SPADE: this layer was built with edge=True and needs an edge map")
            edge = TF.interpolate(edge.to(hidden.dtype), size=tuple(size), mode="nearest")
            hidden = hidden + TF.conv2d(edge, conv.weight[:, self.label_nc:], padding=conv.padding)
        actv = torch.relu(hidden)
        return self.mlp_gamma(actv), self.mlp_beta(actv)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, edge: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C, H, W); labels (N, Hl, Wl) integer or (N, label_nc [+1], Hl, Wl) one-hot; edge (N, 1, Hl, Wl)."""
        labels, edge = split_semantic_input(labels, self.label_nc, self.edge, "SPADE", edge)
        mean, rstd = self.param_free_norm(x, impl=self.impl)
        gamma, beta = self.modulation(labels, x.shape[-2:], edge)
        return F.normalize_modulate(x, mean, rstd, gamma.to(x.dtype), beta.to(x.dtype), offset=1.0, impl=self.impl)
