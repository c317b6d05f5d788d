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


__all__ += ["semantic_modulate", "candidate_combine", "semantic_vectors"]


def semantic_vectors(logits: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """SC-GAN's semantic vectors: ``softmax(temperature * logits)`` over dim 1 (the K vectors).

    As in the published code the temperature multiplies the logits (0.05 for ADE20K and CelebA,
    0.5 for COCO-Stuff), so small values give smooth, near-uniform vectors.

    Args:
        logits: (N, K, H, W) router logits, any floating dtype.
        temperature: factor applied to the logits before the softmax.

    Returns:
        (N, K, H, W) in logits' dtype, non-negative and summing to 1 over K (computed in opmath).
    """
    _checks.floating(logits, "semantic_vectors", "logits", dim=4)
    return reference.semantic_vectors(logits, temperature)


def semantic_modulate(
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    vectors: torch.Tensor,
    bank: torch.Tensor,
    *,
    offset: float = 1.0,
    impl: str | None = None,
) -> torch.Tensor:
    """SC-GAN's semantic normalization (SCN): a per-pixel soft mixture of K bank rows modulates ``N(x)``.

    ``[gamma; beta][n, :, h, w] = sum_k vectors[n, k, h, w] * bank[k, :]`` and
    ``y = (x - mean) * rstd * (offset + gamma) + beta``; gamma / beta are never materialized by the
    native kernels.

    Args:
        x: activations (N, C, H, W), any floating dtype.
        mean, rstd: (N, C) statistics in x's opmath dtype (float32, float64 for float64 x); batch
            statistics are expanded over N by the caller.
        vectors: (N, K, H, W) semantic vectors in x's dtype (see :func:`semantic_vectors`).
        bank: (K, 2C) parameter bank in opmath dtype, gamma rows first (``affine_params_groups``).
        offset: 1.0 for ``N(x) * (1 + gamma) + beta`` (SC-GAN), 0.0 for ``N(x) * gamma + beta``.
        impl: "native", "reference" or None (automatic).

    Returns:
        (N, C, H, W) in x's dtype (contiguous).
    """
    op = "semantic_modulate"
    _checks.activation(x, op)
    n, c, h, w = x.shape
    acc = reference.opmath_dtype(x.dtype)
    for name, t in (("mean", mean), ("rstd", rstd)):
        _checks.floating(t, op, name)
        _checks.shape(t, (n, c), op, name)
        _checks.dtype(t, acc, op, name)
    _checks.floating(vectors, op, "vectors", dim=4)
    k = vectors.shape[1]
    _checks.shape(vectors, (n, k, h, w), op, "vectors")
    _checks.dtype(vectors, x.dtype, op, "vectors")
    _checks.floating(bank, op, "bank", dim=2)
    _checks.shape(bank, (k, 2 * c), op, "bank")
    _checks.dtype(bank, acc, op, "bank")
    _checks.same_device(op, x, "x", mean=mean, rstd=rstd, vectors=vectors, bank=bank)
    impl = choose_impl(impl, x.device)
    if impl == "native":
        return torch.ops.semnorm.semantic_modulate(x, mean, rstd, vectors, bank, float(offset))
    return reference.semantic_modulate(x, mean, rstd, vectors, bank, float(offset))


def candidate_combine(vectors: torch.Tensor, candidates: torch.Tensor, *, impl: str | None = None) -> torch.Tensor:
    """SC-GAN's semantic convolution (SCC) mixing step: ``y = sum_k vectors[:, k] * candidates[:, k]``.

    The candidates are the outputs of the K expert convolutions stacked on dim 1; the mixture weights
    are the per-pixel semantic vectors.

    Args:
        vectors: (N, K, H, W) semantic vectors, any floating dtype.
        candidates: (N, K, C, H, W) candidate feature maps in vectors' dtype.
        impl: "native", "reference" or None (automatic).

    Returns:
        (N, C, H, W) in the inputs' dtype (accumulated in opmath, contiguous).
    """
    op = "candidate_combine"
    _checks.floating(vectors, op, "vectors", dim=4)
    _checks.floating(candidates, op, "candidates", dim=5)
    n, k, h, w = vectors.shape
    _checks.shape(candidates, (n, k, candidates.shape[2], h, w), op, "candidates")
    _checks.dtype(candidates, vectors.dtype, op, "candidates")
    _checks.same_device(op, vectors, "vectors", candidates=candidates)
    impl = choose_impl(impl, vectors.device)
    if impl == "native":
        return torch.ops.semnorm.candidate_combine(vectors, candidates)
    return reference.candidate_combine(vectors, candidates)
