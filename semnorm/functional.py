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


__all__ += ["label_tap_gather", "label_conv", "region_conv"]


def _check_kernel_size(op: str, kernel_size: int) -> None:
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        _checks.fail(op, f"kernel_size must be a positive odd integer, got {kernel_size}")


def _output_size(op: str, labels: torch.Tensor, size: int | tuple[int, int] | None) -> tuple[int, int]:
    if size is None:
        if isinstance(labels, torch.Tensor) and labels.dim() == 3:
            return int(labels.shape[1]), int(labels.shape[2])
        return 1, 1  # the label check reports the bad labels
    if isinstance(size, int):
        size = (size, size)
    height, width = size
    if height <= 0 or width <= 0:
        _checks.fail(op, f"size must be positive, got {height} x {width}")
    return height, width


def _conv_weight(op: str, weight: torch.Tensor, in_channels: int, in_name: str) -> int:
    """Checks a (Cout, Cin, k, k) conv weight with odd k; returns k."""
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        _checks.fail(op, f"weight must be a floating point tensor, got {getattr(weight, 'dtype', type(weight).__name__)}", TypeError)
    if weight.dim() != 4 or weight.shape[2] != weight.shape[3] or weight.numel() == 0:
        _checks.fail(op, f"weight must be a non-empty (Cout, Cin, k, k) tensor, got shape {tuple(weight.shape)}")
    if weight.shape[1] != in_channels:
        _checks.fail(op, f"weight has {weight.shape[1]} input channels but {in_name} is {in_channels}")
    _check_kernel_size(op, int(weight.shape[2]))
    return int(weight.shape[2])


def _add_bias(op: str, out: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if bias is None:
        return out
    if not isinstance(bias, torch.Tensor) or bias.dtype != weight.dtype:
        _checks.fail(op, f"bias must be a tensor of weight's dtype {weight.dtype}, got {getattr(bias, 'dtype', type(bias).__name__)}", TypeError)
    _checks.shape(bias, (weight.shape[0],), op, "bias")
    _checks.same_device(op, weight, "weight", bias=bias)
    return out + bias.view(1, -1, 1, 1)


def label_tap_gather(
    table: torch.Tensor, labels: torch.Tensor, kernel_size: int, height: int, width: int, *, impl: str | None = None
) -> torch.Tensor:
    """Sum of k*k label-indexed table columns per pixel: the label convolution's core.

    ``out[n, o, h, w] = sum_{ty, tx} table[t, o, ty*k + tx, label(h + ty - k//2, w + tx - k//2)]``, where
    taps outside the image contribute 0 (zero padding) and ``t = n`` if ``T == N`` else 0.

    Args:
        table: (T, Cout, k*k, L) with T = 1 (shared) or N (one table per sample), any floating dtype.
        labels: (N, Hl, Wl) integer labels in [0, L), sampled at (height, width).
        kernel_size: odd k >= 1.
        height, width: output resolution.
        impl: "native", "reference" or None (automatic).

    Returns:
        (N, Cout, height, width) in table's dtype (accumulated in float32, float64 for float64).
    """
    op = "label_tap_gather"
    if not isinstance(table, torch.Tensor) or not table.is_floating_point():
        _checks.fail(op, f"table must be a floating point tensor, got {getattr(table, 'dtype', type(table).__name__)}", TypeError)
    if table.dim() != 4 or table.numel() == 0:
        _checks.fail(op, f"table must be a non-empty (T, Cout, k*k, L) tensor, got shape {tuple(table.shape)}")
    _check_kernel_size(op, kernel_size)
    if table.shape[2] != kernel_size * kernel_size:
        _checks.fail(op, f"table must have kernel_size^2 = {kernel_size * kernel_size} taps in dimension 2, got shape {tuple(table.shape)}")
    if height <= 0 or width <= 0:
        _checks.fail(op, f"height and width must be positive, got {height} x {width}")
    impl = choose_impl(impl, table.device)
    batch = labels.shape[0] if isinstance(labels, torch.Tensor) and labels.dim() == 3 else table.shape[0]
    _checks.labels(labels, batch, op, table.shape[3], check_values=impl == "reference")
    if table.shape[0] not in (1, batch):
        _checks.fail(op, f"table must have 1 or N = {batch} entries in dimension 0 (one per sample), got {table.shape[0]}")
    _checks.same_device(op, table, "table", labels=labels)
    if impl == "native":
        return torch.ops.semnorm.label_tap_gather(table, labels, kernel_size, height, width)
    return reference.label_tap_gather(table, labels, kernel_size, height, width)


def label_conv(
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    size: int | tuple[int, int] | None = None,
    *,
    impl: str | None = None,
) -> torch.Tensor:
    """``conv2d(onehot(labels), weight, bias, padding=k//2)`` without the one-hot map (SPADE's first conv).

    Exact: each output pixel is the sum over the k*k taps of the weight column of the neighbour's
    class (zero outside the image), so the cost is k*k gathers per output value instead of
    k*k*L multiply-adds.

    Args:
        labels: (N, Hl, Wl) integer labels in [0, L), sampled at ``size`` with the nearest rule.
        weight: (Cout, L, k, k) conv weight over the L one-hot channels, k odd, any floating dtype.
        bias: optional (Cout,) bias in weight's dtype.
        size: output (H, W) (or one int for both); defaults to the labels' (Hl, Wl).
        impl: "native", "reference" or None (automatic).

    Returns:
        (N, Cout, H, W) in weight's dtype.
    """
    op = "label_conv"
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        _checks.fail(op, f"weight must be a (Cout, L, k, k) tensor, got {getattr(weight, 'shape', type(weight).__name__)}")
    k = _conv_weight(op, weight, weight.shape[1], "L")
    height, width = _output_size(op, labels, size)
    c_out, num_classes = weight.shape[:2]
    table = weight.permute(0, 2, 3, 1).reshape(1, c_out, k * k, num_classes)
    out = label_tap_gather(table, labels, k, height, width, impl=impl)
    return _add_bias(op, out, weight, bias)


def region_conv(
    codes: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    size: int | tuple[int, int] | None = None,
    *,
    impl: str | None = None,
) -> torch.Tensor:
    """``conv2d(region_broadcast(codes, labels, H, W), weight, bias, padding=k//2)`` without the style map.

    SEAN's conv over the broadcast style map, exactly: per-region projections
    ``table[n, o, tap, l] = sum_i weight[o, i, tap] * codes[n, l, i]`` (one matmul, in float32 or float64),
    then k*k label-indexed gathers per output value.

    Args:
        codes: (N, L, Cin) per-region codes, floating dtype.
        labels: (N, Hl, Wl) integer labels in [0, L), sampled at ``size`` with the nearest rule.
        weight: (Cout, Cin, k, k) conv weight, k odd, codes' dtype.
        bias: optional (Cout,) bias in weight's dtype.
        size: output (H, W) (or one int for both); defaults to the labels' (Hl, Wl).
        impl: "native", "reference" or None (automatic).

    Returns:
        (N, Cout, H, W) in codes' dtype.
    """
    op = "region_conv"
    if not isinstance(codes, torch.Tensor) or not codes.is_floating_point():
        _checks.fail(op, f"codes must be a floating point tensor, got {getattr(codes, 'dtype', type(codes).__name__)}", TypeError)
    if codes.dim() != 3 or codes.numel() == 0:
        _checks.fail(op, f"codes must be a non-empty (N, L, Cin) tensor, got shape {tuple(codes.shape)}")
    k = _conv_weight(op, weight, codes.shape[2], "codes' Cin")
    if weight.dtype != codes.dtype:
        _checks.fail(op, f"weight has dtype {weight.dtype} but codes have {codes.dtype}", TypeError)
    _checks.same_device(op, codes, "codes", weight=weight)
    _checks.labels(labels, codes.shape[0], op, codes.shape[1], check_values=False)
    height, width = _output_size(op, labels, size)
    acc = reference.opmath_dtype(codes.dtype)
    c_out, c_in = weight.shape[:2]
    table = torch.einsum("oit,nli->notl", weight.reshape(c_out, c_in, k * k).to(acc), codes.to(acc)).to(codes.dtype)
    out = label_tap_gather(table, labels, k, height, width, impl=impl)
    return _add_bias(op, out, weight, bias)
