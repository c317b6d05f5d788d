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


__all__ += ["intra_class_positional"]


def intra_class_positional(
    labels: torch.Tensor, ignore_label: int | None = None, eps: float = 1e-5, *, impl: str | None = None
) -> torch.Tensor:
    """CLADE-ICPE's intra-class positional map D, computed from the labels on the fly.

    For every 8-connected component of every class (pixels with equal labels; diagonal neighbours
    connect), each pixel's offset from the component's centroid, divided per axis by the
    component's largest absolute offset plus ``eps``: ``D[n, 0]`` rows, ``D[n, 1]`` columns, values in
    [-1, 1], 0 for one-pixel components. Flips, crops and any other mask edit give the right D by
    construction (the published pipeline precomputes D offline and forgets to negate the column
    channel when it flips). Not differentiable (labels are integers); works under
    ``torch.compile(fullgraph=True)``.

    Args:
        labels: (N, H, W) uint8/int32/int64 labels, non-negative, any values (no class count needed).
        ignore_label: a label whose pixels belong to no component and get D = 0; None (or any
            negative value) ignores nothing.
        eps: non-negative constant added to each component's largest offset.
        impl: "native", "reference" or None (automatic).

    Returns:
        D: (N, 2, H, W) float32 at the labels' resolution, on the labels' device.
    """
    op = "intra_class_positional"
    impl = choose_impl(impl, labels.device if isinstance(labels, torch.Tensor) else torch.device("cpu"))
    _checks.label_map(labels, op, check_values=impl == "reference")
    if ignore_label is None:
        ignore_label = -1
    if isinstance(ignore_label, bool) or not isinstance(ignore_label, int):
        _checks.fail(op, f"ignore_label must be an int or None, got {type(ignore_label).__name__}", TypeError)
    eps = float(eps)
    if not (eps >= 0.0 and eps != float("inf")):
        _checks.fail(op, f"eps must be finite and non-negative, got {eps}")
    if impl == "native":
        return torch.ops.semnorm.intra_class_positional(labels, ignore_label, eps)
    return reference.intra_class_positional(labels, ignore_label, eps)
