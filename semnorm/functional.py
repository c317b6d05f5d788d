"""The functional API: one documented function per op of the label-indexed family.

Every function validates its arguments (errors name the argument), then runs either the compiled
kernels through ``torch.ops.semnorm`` (``impl="native"``) or the pure-PyTorch reference
(``impl="reference"``); ``impl=None`` picks the native kernels wherever this build has them for the
tensors' device (see :mod:`semnorm._extension`). Both are differentiable and work under
``torch.compile(fullgraph=True)``.

Shapes: ``x`` is (N, C, H, W); ``labels`` is (N, Hl, Wl) uint8/int32/int64 at any resolution, sampled
at (H, W) with PyTorch's nearest rule (``src = floor(dst * Hl / H)``) inside the op.
"""

from __future__ import annotations

import torch

from . import _checks, reference
from . import ops as _ops  # noqa: F401  (registers fake kernels and autograd)
from ._extension import choose_impl

__all__ = ["region_pool", "region_broadcast"]


def region_pool(
    x: torch.Tensor, labels: torch.Tensor, num_classes: int, mean: bool = True, *, impl: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region-wise pooling of ``x`` by label (SEAN's style matrix).

    Args:
        x: activations (N, C, H, W), any floating dtype.
        labels: (N, Hl, Wl) integer labels in [0, num_classes), sampled at (H, W).
        num_classes: number of regions L.
        mean: average (True) or sum (False) over each region's pixels.
        impl: "native", "reference" or None (automatic).

    Returns:
        ``(pooled, counts)``: pooled (N, L, C) in x's dtype, zero for labels absent from a sample;
        counts (N, L) int64 pixel counts.
    """
    op = "region_pool"
    _checks.activation(x, op)
    impl = choose_impl(impl, x.device)
    _checks.labels(labels, x.shape[0], op, num_classes, check_values=impl == "reference")
    _checks.same_device(op, x, "x", labels=labels)
    if impl == "native":
        return torch.ops.semnorm.region_pool(x, labels, num_classes, mean)
    return reference.region_pool(x, labels, num_classes, mean)


def region_broadcast(
    codes: torch.Tensor, labels: torch.Tensor, height: int, width: int, *, impl: str | None = None
) -> torch.Tensor:
    """Broadcast per-region codes back to pixels: ``out[n, :, h, w] = codes[n, label(h, w), :]``.

    Args:
        codes: (N, L, C) per-region codes, any floating dtype.
        labels: (N, Hl, Wl) integer labels in [0, L), sampled at (height, width).
        height, width: output resolution.
        impl: "native", "reference" or None (automatic).

    Returns:
        (N, C, height, width) in codes' dtype.
    """
    op = "region_broadcast"
    if not isinstance(codes, torch.Tensor) or not codes.is_floating_point():
        _checks.fail(op, f"codes must be a floating point tensor, got {getattr(codes, 'dtype', type(codes).__name__)}", TypeError)
    if codes.dim() != 3 or codes.numel() == 0:
        _checks.fail(op, f"codes must be a non-empty (N, L, C) tensor, got shape {tuple(codes.shape)}")
    if height <= 0 or width <= 0:
        _checks.fail(op, f"height and width must be positive, got {height} x {width}")
    impl = choose_impl(impl, codes.device)
    _checks.labels(labels, codes.shape[0], op, codes.shape[1], check_values=impl == "reference")
    _checks.same_device(op, codes, "codes", labels=labels)
    if impl == "native":
        return torch.ops.semnorm.region_broadcast(codes, labels, height, width)
    return reference.region_broadcast(codes, labels, height, width)


__all__ += ["class_modulate"]


def class_modulate(
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    scale_gamma: torch.Tensor | None = None,
    scale_beta: torch.Tensor | None = None,
    offset: float = 0.0,
    impl: str | None = None,
) -> torch.Tensor:
    """CLADE guided sampling fused with normalize + modulate (CLADE sec. 3.2 and 3.4).

    ``y = (x - mean[n, c]) * rstd[n, c] * (offset + weight[l, c] * sg[n, h, w]) + bias[l, c] * sb[n, h, w]``
    with ``l`` the label at (h, w); ``sg = sb = 1`` when the scales are absent. CLADE itself uses
    ``offset=0`` (``y = N(x) * gamma + beta``); ``offset=1`` gives the SPADE convention. No dense
    gamma/beta or one-hot map is built by the native kernel.

    Args:
        x: activations (N, C, H, W), any floating dtype.
        mean: (N, C) per-sample (or batch statistics expanded over N) means, opmath dtype of x
            (float32, or float64 for float64 x).
        rstd: (N, C) reciprocal standard deviations, same dtype as mean.
        labels: (N, Hl, Wl) integer labels (uint8/int32/int64) in [0, L), any resolution; sampled
            at (H, W) with the nearest rule.
        weight: (L, C) gamma bank (``class_specified_affine.weight``), opmath dtype; L = number of classes.
        bias: (L, C) beta bank, opmath dtype.
        scale_gamma: optional (N, H, W) ICPE factor ``1 + dist_conv_w(D)`` multiplying gamma, opmath dtype.
        scale_beta: optional (N, H, W) ICPE factor ``1 + dist_conv_b(D)`` multiplying beta, opmath dtype.
        offset: constant added to gamma (0 for CLADE).
        impl: "native", "reference" or None (automatic).

    Returns:
        (N, C, H, W) contiguous, in x's dtype. Differentiable in x, mean, rstd, weight, bias and
        the scales; classes absent from the batch get zero gradient rows.
    """
    op = "class_modulate"
    _checks.activation(x, op)
    _checks.stats(x, mean, rstd, op)
    _checks.class_table(weight, x, op, "weight")
    _checks.class_table(bias, x, op, "bias")
    if bias.shape != weight.shape:
        _checks.fail(op, f"bias must have weight's shape {tuple(weight.shape)}, got {tuple(bias.shape)}")
    _checks.pixel_map(scale_gamma, x, op, "scale_gamma")
    _checks.pixel_map(scale_beta, x, op, "scale_beta")
    impl = choose_impl(impl, x.device)
    _checks.labels(labels, x.shape[0], op, weight.shape[0], check_values=impl == "reference")
    _checks.same_device(op, x, "x", labels=labels)
    if impl == "native":
        return torch.ops.semnorm.class_modulate(x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta, float(offset))
    return reference.class_modulate(x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta, float(offset))
