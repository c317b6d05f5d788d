"""SEAN: semantic region-adaptive normalization (Zhu et al. 2020) on semnorm's ops."""

from __future__ import annotations

import torch
from torch import nn

from .. import functional as F
from ..reference import opmath_dtype
from ._inputs import split_semantic_input
from .norm import ParamFreeNorm
from .spade import SPADE

__all__ = ["SEAN", "region_style_codes"]


def region_style_codes(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                       impl: str | None = None) -> torch.Tensor:
    """SEAN's style matrix: region-wise average pooling of the style encoder's features.

    ``ST[n, l, :] = mean of features[n, :, h, w] over the pixels (h, w) labelled l`` (SEAN sec. 3.1),
    zero for classes absent from sample n. One :func:`semnorm.functional.region_pool` call: no loop
    over samples or regions.

    Args:
        features: (N, C, H, W) style encoder output (published: C = 512 at half the image size).
        labels: (N, Hl, Wl) integer labels in [0, num_classes) at any resolution (sampled at (H, W)
            with the nearest rule, like the published ``F.interpolate(mode='nearest')``), or the
            published one-hot map (N, num_classes, Hl, Wl).
        num_classes: number of regions L.
        impl: "native", "triton", "reference" or None (automatic).

    Returns:
        (N, L, C) style codes in features' dtype.
    """
    labels, _ = split_semantic_input(labels, num_classes, False, "region_style_codes")
    return F.region_pool(features, labels, num_classes, mean=True, impl=impl)[0]


class SEAN(nn.Module):
    """SEAN (the published code's ``ACE``): ``y = N(x + B z) * (1 + gamma) + beta``.

    ``gamma = a_g * gamma_s + (1 - a_g) * gamma_o`` and ``beta = a_b * beta_s + (1 - a_b) * beta_o``
    with ``a = sigmoid(blending_*)``; ``gamma_o, beta_o`` come from an inner SPADE network on the
    mask, ``gamma_s, beta_s = conv3x3(S)`` from the style map ``S[n, :, h, w] =
    relu(fc_mu_l(style[n, l]))`` with ``l`` the class of pixel (h, w); ``z`` is one N(0, 1) value per
    pixel and ``B = noise_var`` a per-channel scale.

    How it is computed (exactly the published math, without its dense intermediates):

    * the per-class linear maps ``fc_mu{j}`` run as one batched matmul over the classes (their weights
      stacked), for every class of every sample; the codes of classes absent from a sample are never
      read by any pixel, so they contribute nothing (the published code skips them);
    * ``conv_gamma`` / ``conv_beta`` over the 512-channel style map are
      :func:`semnorm.functional.region_conv`: per-region projections of the codes through each
      kernel tap, then a 9-tap gather by label. The style map is never built;
    * the mask branch is the inner :class:`semnorm.nn.SPADE`'s ``modulation()``;
    * the blend scales each branch's last convolution weights and bias (both branches are linear in
      them), so the branches add into one dense gamma and one beta; noise, normalization and the
      modulation are then one fused :func:`semnorm.functional.normalize_modulate` pass (statistics of
      ``x + noise_var[c] * z``), which keeps only gamma for its backward and writes one gradient map
      for the modulation (beta's gradient is grad_y itself), not four.

    Published code vs paper (semnorm follows the published code, whose checkpoints it loads):

    * paper eq. 1 modulates with ``gamma * N(x) + beta``; the code uses ``N(x) * (1 + gamma) + beta``;
    * the paper's per-region transform ``A_ij`` is a 1x1 conv (linear); the code applies a ReLU after
      each ``fc_mu{j}`` before broadcasting (``middle_avg``), then the 3x3 convs;
    * the paper's blending weights ``alpha`` are learned; the code stores scalars ``blending_gamma``,
      ``blending_beta`` of shape (1,) (zero init) and uses their sigmoid;
    * paper eq. 3-4 are batch statistics of ``h``; the code normalizes ``x + noise`` with synchronized
      batch norm (the noise enters the statistics, as here) and draws the noise in training and in
      eval alike (as here when ``noise=True``);
    * the code hard-codes 19 classes (``fc_mu0`` .. ``fc_mu18``) and a 512-dim style; here any
      ``label_nc`` and ``style_dim``.

    Published names, so checkpoints load with ``load_state_dict(strict=True)``: ``param_free_norm.*``
    (BatchNorm2d buffers), ``noise_var`` (C,), ``blending_gamma`` (1,), ``blending_beta`` (1,),
    ``Spade.param_free_norm.*`` (unused), ``Spade.mlp_shared.0.*``, ``Spade.mlp_gamma.*``,
    ``Spade.mlp_beta.*`` and, with the style branch, ``fc_mu{0..L-1}.*``, ``conv_gamma.*``,
    ``conv_beta.*``. Without the style branch (``use_style=False``: the published ``up_3`` block,
    ``use_rgb=False``) there are no ``fc_mu*`` / ``conv_gamma`` / ``conv_beta``, but ``noise_var``
    and the (unused) blending scalars still exist, as published.

    Args:
        num_features: channels C of x.
        label_nc: number of classes L (including a don't-care class if the dataset has one).
        style_dim: length of each region's style code (published: 512).
        norm: "batch", "instance" or "syncbatch" (published SEAN always uses synchronized batch
            norm; "batch" and "syncbatch" have the same buffers and are equal on one process).
        use_style: build the style branch (False: mask-only, SPADE modulation plus noise).
        noise: add ``noise_var[c] * z`` before the norm (the parameter exists either way, so
            published checkpoints load into both).
        impl: semnorm implementation for every op ("native", "triton", "reference" or None: automatic);
            setting ``layer.impl`` also sets the inner SPADE's.
        kernel_size: kernel of the convolutions (published: 3).
        hidden: hidden channels of the mask branch (published: 128).
    """

    def __init__(self, num_features: int, label_nc: int, style_dim: int = 512, norm: str = "batch",
                 use_style: bool = True, noise: bool = True, impl: str | None = None, kernel_size: int = 3,
                 hidden: int = 128) -> None:
        super().__init__()
        for name, value in (("num_features", num_features), ("label_nc", label_nc), ("style_dim", style_dim),
                            ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"semnorm.SEAN: {name} must be a positive int, got {value!r}")
        if not isinstance(kernel_size, int) or kernel_size % 2 != 1 or kernel_size < 1:
            raise ValueError(f"semnorm.SEAN: kernel_size must be a positive odd int, got {kernel_size!r}")
        self.num_features, self.label_nc, self.style_dim = num_features, label_nc, style_dim
        self.use_style, self.noise = bool(use_style), bool(noise)
        self.param_free_norm = ParamFreeNorm(num_features, norm)
        self.Spade = SPADE(num_features, label_nc, norm=norm, kernel_size=kernel_size, hidden=hidden, impl=impl)
        self.impl = impl
        self.blending_gamma = nn.Parameter(torch.zeros(1))
        self.blending_beta = nn.Parameter(torch.zeros(1))
        self.noise_var = nn.Parameter(torch.zeros(num_features))
        if self.use_style:
            for j in range(label_nc):
                setattr(self, f"fc_mu{j}", nn.Linear(style_dim, style_dim))
            pad = kernel_size // 2
            self.conv_gamma = nn.Conv2d(style_dim, num_features, kernel_size, padding=pad)
            self.conv_beta = nn.Conv2d(style_dim, num_features, kernel_size, padding=pad)

    @property
    def impl(self) -> str | None:
        return self._impl

    @impl.setter
    def impl(self, value: str | None) -> None:
        self._impl = value
        if "Spade" in self._modules:
            self._modules["Spade"].impl = value

    def region_codes(self, style: torch.Tensor) -> torch.Tensor:
        """``relu(fc_mu_l(style[:, l]))`` for every class l in one batched matmul: (N, L, style_dim)."""
        if not self.use_style:
            raise RuntimeError("semnorm.SEAN: this layer was built with use_style=False and has no style branch")
        num_classes, dim = self.label_nc, self.style_dim
        if not isinstance(style, torch.Tensor) or not style.is_floating_point():
            raise TypeError(f"semnorm.SEAN: style must be a floating point tensor, got "
                            f"{getattr(style, 'dtype', type(style).__name__)}")
        if style.dim() != 3 or style.shape[1:] != (num_classes, dim):
            raise ValueError(f"semnorm.SEAN: style must have shape (N, label_nc={num_classes}, style_dim={dim}), "
                             f"got {tuple(style.shape)}")
        fcs = [getattr(self, f"fc_mu{j}") for j in range(num_classes)]
        weight = torch.stack([fc.weight for fc in fcs])  # (L, out, in)
        bias = torch.stack([fc.bias for fc in fcs])  # (L, out)
        codes = torch.einsum("nli,loi->nlo", style.to(weight.dtype), weight) + bias
        return torch.relu(codes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, style: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """Modulate x by its labels (and per-region style codes).

        Args:
            x: activations (N, C, H, W), any floating dtype and memory layout.
            labels: (N, Hl, Wl) integer labels in [0, label_nc) at any resolution (sampled at (H, W)
                with the nearest rule) or the published one-hot map (N, label_nc, Hl, Wl).
            style: (N, label_nc, style_dim) per-region style codes (the style matrix ST, e.g. from
                :func:`region_style_codes` on the style encoder's features, or edited by the caller);
                required with the style branch, ignored without it. Rows of absent classes are unused.
            noise: optional (N, H, W) per-pixel noise z (default: drawn from torch's RNG as
                ``torch.randn(N, W, H).transpose(1, 2)`` on x's device, the published draw order, so
                a CPU draw under the same seed equals the published one). Ignored when
                ``noise=False``.

        Returns:
            y (N, C, H, W) in x's dtype.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"semnorm.SEAN: x must have shape (N, {self.num_features}, H, W), "
                             f"got {tuple(getattr(x, 'shape', ()))}")
        labels, _ = split_semantic_input(labels, self.label_nc, False, "SEAN", size=tuple(x.shape[-2:]))
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"semnorm.SEAN: labels have batch size {labels.shape[0]} but x has {x.shape[0]}")
        n, _, h, w = x.shape
        size = (h, w)
        codes = None
        if self.use_style:  # style checked before the norm runs (it updates its running statistics)
            if style is None:
                raise ValueError("semnorm.SEAN: style codes (N, label_nc, style_dim) are required with the style branch")
            codes = self.region_codes(style).to(self.conv_gamma.weight.dtype)
            if codes.shape[0] != n:
                raise ValueError(f"semnorm.SEAN: style has batch size {codes.shape[0]} but x has {n}")
        acc = opmath_dtype(x.dtype)
        z = scale = None
        if self.noise:
            if noise is None:
                z = torch.randn(n, w, h, dtype=acc, device=x.device).transpose(1, 2).contiguous()
            else:
                if not isinstance(noise, torch.Tensor) or noise.shape != (n, h, w):
                    raise ValueError(f"semnorm.SEAN: noise must have shape (N, H, W) = {(n, h, w)}, "
                                     f"got {tuple(getattr(noise, 'shape', ()))}")
                z = noise.to(device=x.device, dtype=acc).contiguous()
            scale = self.noise_var.to(acc)
        mean, rstd, of_x = self.param_free_norm.stats(x, noise=z, noise_scale=scale, impl=self.impl)
        if codes is None:
            gamma, beta = self.Spade.modulation(labels, size)
        else:
            # gamma = a * gamma_s + (1 - a) * gamma_o with the scalars applied to the weights
            a_gamma, a_beta = torch.sigmoid(torch.cat([self.blending_gamma, self.blending_beta]))
            gamma, beta = self.Spade.modulation(labels, size, scales=(1 - a_gamma, 1 - a_beta))
            for conv, a, out in ((self.conv_gamma, a_gamma, gamma), (self.conv_beta, a_beta, beta)):
                a = a.to(conv.weight.dtype)
                # in place: neither the gather nor the convolution keeps its output for its backward
                out.add_(F.region_conv(codes, labels, conv.weight * a, conv.bias * a, size, impl=self.impl).to(out.dtype))
        return F.normalize_modulate(x, mean, rstd, gamma.to(x.dtype), beta.to(x.dtype), noise=z, noise_scale=scale,
                                    offset=1.0, stats_of_x=of_x, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, label_nc={self.label_nc}, style_dim={self.style_dim}, "
                f"use_style={self.use_style}, noise={self.noise}, impl={self.impl!r}")
