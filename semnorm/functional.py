"""The functional API: one documented function per op of the label-indexed family.

Every function validates its arguments (errors name the argument), then runs the compiled kernels
through ``torch.ops.semnorm`` (``impl="native"``), the Triton kernels through
``torch.ops.semnorm_triton`` (``impl="triton"``) or the pure-PyTorch reference
(``impl="reference"``); ``impl=None`` picks the fastest backend this build has for the tensors'
device (see :mod:`semnorm._extension`). All are differentiable and work under
``torch.compile(fullgraph=True)``.

Shapes: ``x`` is (N, C, H, W); ``labels`` is (N, Hl, Wl) uint8/int32/int64 at any resolution, sampled
at (H, W) with PyTorch's nearest rule (``src = floor(dst * Hl / H)``) inside the op.
"""

from __future__ import annotations

import torch

from . import _checks, reference
from . import ops as _ops  # noqa: F401  (registers fake kernels and autograd)
from ._extension import choose_impl, op_namespace
from .ops.stats import STATS_OF_X

__all__ = [
    "region_pool",
    "region_broadcast",
    "channel_moments",
    "norm_stats",
    "normalize_modulate",
    "class_modulate",
    "label_tap_gather",
    "label_conv",
    "region_conv",
    "semantic_modulate",
    "candidate_combine",
    "semantic_vectors",
    "intra_class_positional",
]


def region_pool(
    x: torch.Tensor, labels: torch.Tensor, num_classes: int, mean: bool = True, *, impl: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region-wise pooling of ``x`` by label (SEAN's style matrix).

    Args:
        x: activations (N, C, H, W), any floating dtype.
        labels: (N, Hl, Wl) integer labels in [0, num_classes), sampled at (H, W).
        num_classes: number of regions L.
        mean: average (True) or sum (False) over each region's pixels.
        impl: "native", "triton", "reference" or None (automatic).

    Returns:
        ``(pooled, counts)``: pooled (N, L, C) in x's dtype, zero for labels absent from a sample;
        counts (N, L) int64 pixel counts.
    """
    op = "region_pool"
    _checks.activation(x, op)
    impl = choose_impl(impl, x.device, op)
    _checks.labels(labels, x.shape[0], op, num_classes, check_values=impl == "reference")
    _checks.same_device(op, x, "x", labels=labels)
    if impl != "reference":
        return op_namespace(impl).region_pool(x, labels, num_classes, mean)
    return reference.region_pool(x, labels, num_classes, mean)


def region_broadcast(
    codes: torch.Tensor, labels: torch.Tensor, height: int, width: int, *, impl: str | None = None
) -> torch.Tensor:
    """Broadcast per-region codes back to pixels: ``out[n, :, h, w] = codes[n, label(h, w), :]``.

    Args:
        codes: (N, L, C) per-region codes, any floating dtype.
        labels: (N, Hl, Wl) integer labels in [0, L), sampled at (height, width).
        height, width: output resolution.
        impl: "native", "triton", "reference" or None (automatic).

    Returns:
        (N, C, height, width) in codes' dtype.
    """
    op = "region_broadcast"
    _checks.region_codes(codes, op)
    if height <= 0 or width <= 0:
        _checks.fail(op, f"height and width must be positive, got {height} x {width}")
    impl = choose_impl(impl, codes.device, op)
    _checks.labels(labels, codes.shape[0], op, codes.shape[1], check_values=impl == "reference")
    _checks.same_device(op, codes, "codes", labels=labels)
    if impl != "reference":
        return op_namespace(impl).region_broadcast(codes, labels, height, width)
    return reference.region_broadcast(codes, labels, height, width)


# ----------------------------------------------------------------------------------------------
# norm statistics and normalize-modulate


NORMS = ("batch", "instance", "syncbatch")


def _check_noise(x: torch.Tensor, noise: torch.Tensor | None, noise_scale: torch.Tensor | None, op: str) -> None:
    _checks.together(op, noise=noise, noise_scale=noise_scale)
    if noise is not None:
        n, c, h, w = x.shape
        _checks.opmath_tensor(noise, x, (n, h, w), op, "noise")
        _checks.opmath_tensor(noise_scale, x, (c,), op, "noise_scale")


def channel_moments(
    x: torch.Tensor,
    per_instance: bool,
    noise: torch.Tensor | None = None,
    noise_scale: torch.Tensor | None = None,
    *,
    impl: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and M2 (sum of squared deviations from the mean, not divided) of ``x`` per channel.

    Accumulated in opmath (float32, float64 for float64 inputs) with a two-pass scheme per (n, c)
    plane and Chan's parallel combination across the batch: no cancellation for large means.

    Args:
        x: activations (N, C, H, W), any floating dtype.
        per_instance: True: statistics per (n, c) over (H, W), shape (N, C) (instance norm);
            False: per channel over (N, H, W), shape (C,) (batch norm).
        noise: optional (N, H, W) per-pixel noise in x's opmath dtype (SEAN); the statistics are those
            of ``x + noise_scale[c] * noise[n, h, w]``.
        noise_scale: (C,) per-channel noise strength in x's opmath dtype; given with ``noise``.
        impl: "native", "triton", "reference" or None (automatic).

    Returns:
        ``(mean, m2)``, both (N, C) or (C,) in x's opmath dtype. Differentiable wrt x, noise and
        noise_scale.
    """
    op = "channel_moments"
    _checks.activation(x, op)
    _check_noise(x, noise, noise_scale, op)
    impl = choose_impl(impl, x.device, op)
    if impl != "reference":
        return op_namespace(impl).channel_moments(x, bool(per_instance), noise, noise_scale)
    return reference.channel_moments(x, bool(per_instance), noise, noise_scale)


def _distributed_initialized() -> bool:
    """True when torch.distributed is available and a default process group is initialized."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _sync_moments(
    count: int, mean: torch.Tensor, m2: torch.Tensor, process_group
) -> tuple[torch.Tensor | int, torch.Tensor, torch.Tensor]:
    """Combine per-rank (count, mean, M2) over the process group with Chan's formula.

    Uses a differentiable all-gather, so gradients flow back to every rank's inputs. Ranks may hold
    different batch sizes. Without an initialized process group (or with one rank) returns the input.
    """
    if not _distributed_initialized():
        return count, mean, m2
    import torch.distributed as dist

    group = process_group if process_group is not None else dist.group.WORLD
    if dist.get_world_size(group) == 1:
        return count, mean, m2
    from torch.distributed.nn.functional import all_gather

    local = torch.stack([torch.full_like(mean, float(count)), mean, m2])  # (3, C)
    parts = torch.stack(all_gather(local, group=group))  # (world, 3, C)
    counts, means, m2s = parts.unbind(1)
    total = counts.sum(0)
    global_mean = (counts * means).sum(0) / total
    global_m2 = m2s.sum(0) + (counts * (means - global_mean).square()).sum(0)
    return total, global_mean, global_m2


def norm_stats(
    x: torch.Tensor,
    norm: str = "batch",
    *,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    process_group=None,
    noise: torch.Tensor | None = None,
    noise_scale: torch.Tensor | None = None,
    impl: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Statistics of a parameter-free norm, ready for :func:`normalize_modulate`.

    ``rstd = 1 / sqrt(var + eps)`` with the biased variance (``M2 / count``), like
    ``F.batch_norm`` / ``F.instance_norm``. Differentiable wrt x (and noise, noise_scale).

    Args:
        x: activations (N, C, H, W), any floating dtype (statistics accumulate in float32, float64 for
            float64 inputs).
        norm: "batch" (per channel over N, H, W), "instance" (per (n, c) over H, W) or "syncbatch"
            (batch statistics combined over ``process_group`` with a differentiable all-gather; ranks
            may hold different batch sizes; exactly "batch" when torch.distributed is not initialized).
        running_mean, running_var: optional (C,) buffers (batch/syncbatch only). In training they are
            updated in place like ``F.batch_norm`` (``momentum``; running_var gets the unbiased
            variance); with ``training=False`` they are used instead of the batch statistics (no
            gradient flows to them).
        training: training mode (batch statistics, running-stat update) or eval mode.
        momentum: running-stat momentum (PyTorch's convention: ``new = (1 - m) * old + m * batch``).
        eps: added to the variance.
        process_group: torch.distributed group for "syncbatch" (default: the world).
        noise: optional (N, H, W) noise in x's opmath dtype; statistics of
            ``x + noise_scale[c] * noise`` (SEAN adds noise before the norm).
        noise_scale: (C,) in x's opmath dtype, given with ``noise``.
        impl: "native", "triton", "reference" or None (automatic), for the moments.

    Returns:
        ``(mean, rstd)``, both (N, C) contiguous in x's opmath dtype (batch statistics expanded over N).

    Raises:
        ValueError: in training with a single value per channel (batch) or per plane (instance),
            like PyTorch.
    """
    op = "norm_stats"
    _checks.activation(x, op)
    if norm not in NORMS:
        _checks.fail(op, f"norm must be one of {NORMS}, got {norm!r}")
    _check_noise(x, noise, noise_scale, op)
    n, c, h, w = x.shape
    acc = reference.opmath_dtype(x.dtype)

    if norm == "instance":
        if running_mean is not None or running_var is not None:
            _checks.fail(op, "running_mean / running_var are not supported with norm='instance'")
        if h * w == 1:
            _checks.fail(op, f"Expected more than 1 spatial element when training, got input size {x.size()}")
        mean, m2 = channel_moments(x, True, noise, noise_scale, impl=impl)
        return mean, torch.rsqrt(m2 / (h * w) + eps)

    _checks.together(op, running_mean=running_mean, running_var=running_var)
    if running_mean is not None:
        for name, t in (("running_mean", running_mean), ("running_var", running_var)):
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                _checks.fail(op, f"{name} must be a floating point tensor", TypeError)
            _checks.shape(t, (c,), op, name)
            _checks.same_device(op, x, "x", **{name: t})
    if not isinstance(momentum, (int, float)):
        _checks.fail(op, f"momentum must be a number (cumulative averaging is not supported), got {momentum!r}", TypeError)

    if not training and running_mean is not None:
        mean = running_mean.detach().to(acc)
        var = running_var.detach().to(acc)
    else:
        count = n * h * w
        if training and count == 1:
            if norm == "batch" or not _distributed_initialized():
                raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
        mean, m2 = channel_moments(x, False, noise, noise_scale, impl=impl)
        if norm == "syncbatch":
            count, mean, m2 = _sync_moments(count, mean, m2, process_group)
        var = m2 / count
        if training and running_mean is not None:
            with torch.no_grad():
                unbiased = m2 / (count - 1) if isinstance(count, int) else m2 / (count - 1).clamp(min=1)
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    rstd = torch.rsqrt(var + eps)
    return mean.expand(n, c).contiguous(), rstd.expand(n, c).contiguous()


def _stats_of_x(op: str, stats_of_x: str | None) -> int:
    if not (stats_of_x is None or isinstance(stats_of_x, str) and stats_of_x in STATS_OF_X):
        _checks.fail(op, f"stats_of_x must be None, 'instance' or 'batch', got {stats_of_x!r}")
    return STATS_OF_X[stats_of_x]


def normalize_modulate(
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    *,
    gamma2: torch.Tensor | None = None,
    beta2: torch.Tensor | None = None,
    blend: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    noise_scale: torch.Tensor | None = None,
    offset: float = 1.0,
    stats_of_x: str | None = None,
    impl: str | None = None,
) -> torch.Tensor:
    """Fused normalize + dense modulation: ``y = (x_eff - mean) * rstd * (offset + g) + b``.

    One pass over x forward and one backward (SPADE: ``offset=1``; SEAN's two branches with
    ``blend``; noise before the norm). Gradients flow to x (direct term; the statistics' part flows
    through ``mean`` and ``rstd``), mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale.

    Args:
        x: activations (N, C, H, W), any floating dtype.
        mean, rstd: (N, C) statistics in x's opmath dtype (from :func:`norm_stats`).
        gamma, beta: dense (N, C, H, W) modulation in x's dtype (g = gamma, b = beta).
        gamma2, beta2: optional second branch (N, C, H, W) in x's dtype, given with ``blend``.
        blend: optional (2,) weights in x's opmath dtype: ``g = blend[0] * gamma + (1 - blend[0]) *
            gamma2``, ``b = blend[1] * beta + (1 - blend[1]) * beta2`` (SEAN's alpha_gamma, alpha_beta).
        noise: optional (N, H, W) noise in opmath dtype; ``x_eff = x + noise_scale[c] * noise``.
        noise_scale: (C,) in opmath dtype, given with ``noise``.
        offset: constant added to g (1 for SPADE/SEAN/SC-GAN, 0 for CLADE-style ``xhat * gamma``).
        stats_of_x: None when mean and rstd are independent inputs (they get gradients; the norm's part
            of x's gradient flows through them); "instance" or "batch" when they are x_eff's own
            instance / batch statistics (biased variance) computed without a graph, e.g. by
            :meth:`semnorm.nn.ParamFreeNorm.stats`: the backward then adds the statistics' gradient to
            x's in place (one (N, C, H, W) gradient buffer instead of two) and mean and rstd get none.
        impl: "native", "triton", "reference" or None (automatic).

    Returns:
        y (N, C, H, W) contiguous in x's dtype.
    """
    op = "normalize_modulate"
    _checks.activation(x, op)
    n, c = x.shape[:2]
    _checks.opmath_tensor(mean, x, (n, c), op, "mean")
    _checks.opmath_tensor(rstd, x, (n, c), op, "rstd")
    _checks.like_x(gamma, x, op, "gamma")
    _checks.like_x(beta, x, op, "beta")
    _checks.together(op, gamma2=gamma2, beta2=beta2, blend=blend)
    if blend is not None:
        _checks.like_x(gamma2, x, op, "gamma2")
        _checks.like_x(beta2, x, op, "beta2")
        _checks.opmath_tensor(blend, x, (2,), op, "blend")
    _check_noise(x, noise, noise_scale, op)
    code = _stats_of_x(op, stats_of_x)
    impl = choose_impl(impl, x.device, op)
    if impl != "reference":
        return op_namespace(impl).normalize_modulate(
            x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, float(offset), code
        )
    return reference.normalize_modulate(
        x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, offset, stats_of_x
    )


# ----------------------------------------------------------------------------------------------
# class modulate (CLADE guided sampling + normalize + modulate)


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
    stats_of_x: str | None = None,
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
        stats_of_x: None when mean and rstd are independent inputs (they get gradients; the norm's part
            of x's gradient flows through them); "instance" or "batch" when they are x's own
            instance / batch statistics (biased variance) computed without a graph, e.g. by
            :meth:`semnorm.nn.ParamFreeNorm.stats`: the backward then adds the statistics' gradient to
            x's in place (one (N, C, H, W) gradient buffer instead of two) and mean and rstd get none.
        impl: "native", "triton", "reference" or None (automatic).

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
    code = _stats_of_x(op, stats_of_x)
    impl = choose_impl(impl, x.device, op)
    _checks.labels(labels, x.shape[0], op, weight.shape[0], check_values=impl == "reference")
    _checks.same_device(op, x, "x", labels=labels)
    if impl != "reference":
        return op_namespace(impl).class_modulate(
            x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta, float(offset), code
        )
    return reference.class_modulate(x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta, float(offset), stats_of_x)


# ----------------------------------------------------------------------------------------------
# label conv: k x k convolutions of one-hot labels / broadcast region codes as gathers


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


def _bias_in_centre_tap(op: str, table: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``table`` (T, Cout, k*k, L) with ``bias`` added to its centre tap's columns.

    The centre tap reads each pixel's own label, which is always inside the image, so every output
    value gets the bias exactly once, from the gather itself: no dense (N, Cout, H, W) bias pass.
    """
    if bias is None:
        return table
    if not isinstance(bias, torch.Tensor) or bias.dtype != weight.dtype:
        _checks.fail(op, f"bias must be a tensor of weight's dtype {weight.dtype}, got {getattr(bias, 'dtype', type(bias).__name__)}", TypeError)
    _checks.shape(bias, (weight.shape[0],), op, "bias")
    _checks.same_device(op, weight, "weight", bias=bias)
    kk = table.shape[2]
    centre = torch.zeros(kk, dtype=table.dtype, device=table.device)
    centre[kk // 2] = 1
    return table + (bias.to(table.dtype).view(-1, 1) * centre).view(1, -1, kk, 1)


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
        impl: "native", "triton", "reference" or None (automatic).

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
    impl = choose_impl(impl, table.device, op)
    batch = labels.shape[0] if isinstance(labels, torch.Tensor) and labels.dim() == 3 else table.shape[0]
    _checks.labels(labels, batch, op, table.shape[3], check_values=impl == "reference")
    if table.shape[0] not in (1, batch):
        _checks.fail(op, f"table must have 1 or N = {batch} entries in dimension 0 (one per sample), got {table.shape[0]}")
    _checks.same_device(op, table, "table", labels=labels)
    if impl != "reference":
        return op_namespace(impl).label_tap_gather(table, labels, kernel_size, height, width)
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
        impl: "native", "triton", "reference" or None (automatic).

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
    return label_tap_gather(_bias_in_centre_tap(op, table, weight, bias), labels, k, height, width, impl=impl)


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
        impl: "native", "triton", "reference" or None (automatic).

    Returns:
        (N, Cout, H, W) in codes' dtype.
    """
    op = "region_conv"
    _checks.region_codes(codes, op, "(N, L, Cin)")
    k = _conv_weight(op, weight, codes.shape[2], "codes' Cin")
    if weight.dtype != codes.dtype:
        _checks.fail(op, f"weight has dtype {weight.dtype} but codes have {codes.dtype}", TypeError)
    _checks.same_device(op, codes, "codes", weight=weight)
    _checks.labels(labels, codes.shape[0], op, codes.shape[1], check_values=False)
    height, width = _output_size(op, labels, size)
    acc = reference.opmath_dtype(codes.dtype)
    c_out, c_in = weight.shape[:2]
    table = torch.einsum("oit,nli->notl", weight.reshape(c_out, c_in, k * k).to(acc), codes.to(acc)).to(codes.dtype)
    return label_tap_gather(_bias_in_centre_tap(op, table, weight, bias), labels, k, height, width, impl=impl)


# ----------------------------------------------------------------------------------------------
# SC-GAN: semantic modulate (SCN), candidate combine (SCC)


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
    stats_of_x: str | None = None,
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
        stats_of_x: None when mean and rstd are independent inputs (they get gradients; the norm's part
            of x's gradient flows through them); "instance" or "batch" when they are x's own
            instance / batch statistics (biased variance) computed without a graph, e.g. by
            :meth:`semnorm.nn.ParamFreeNorm.stats`: the backward then adds the statistics' gradient to
            x's in place (one (N, C, H, W) gradient buffer instead of two) and mean and rstd get none.
        impl: "native", "triton", "reference" or None (automatic).

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
    code = _stats_of_x(op, stats_of_x)
    impl = choose_impl(impl, x.device, op)
    if impl != "reference":
        return op_namespace(impl).semantic_modulate(x, mean, rstd, vectors, bank, float(offset), code)
    return reference.semantic_modulate(x, mean, rstd, vectors, bank, float(offset), stats_of_x)


def candidate_combine(vectors: torch.Tensor, candidates: torch.Tensor, *, impl: str | None = None) -> torch.Tensor:
    """SC-GAN's semantic convolution (SCC) mixing step: ``y = sum_k vectors[:, k] * candidates[:, k]``.

    The candidates are the outputs of the K expert convolutions stacked on dim 1; the mixture weights
    are the per-pixel semantic vectors.

    Args:
        vectors: (N, K, H, W) semantic vectors, any floating dtype.
        candidates: (N, K, C, H, W) candidate feature maps in vectors' dtype.
        impl: "native", "triton", "reference" or None (automatic).

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
    impl = choose_impl(impl, vectors.device, op)
    if impl != "reference":
        return op_namespace(impl).candidate_combine(vectors, candidates)
    return reference.candidate_combine(vectors, candidates)


# ----------------------------------------------------------------------------------------------
# intra-class positional encoding (CLADE-ICPE)


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
        impl: "native", "triton", "reference" or None (automatic).

    Returns:
        D: (N, 2, H, W) float32 at the labels' resolution, on the labels' device.
    """
    op = "intra_class_positional"
    impl = choose_impl(impl, labels.device if isinstance(labels, torch.Tensor) else torch.device("cpu"), op)
    _checks.label_map(labels, op, check_values=impl == "reference")
    if ignore_label is None:
        ignore_label = -1
    if isinstance(ignore_label, bool) or not isinstance(ignore_label, int):
        _checks.fail(op, f"ignore_label must be an int or None, got {type(ignore_label).__name__}", TypeError)
    eps = float(eps)
    if not (eps >= 0.0 and eps != float("inf")):
        _checks.fail(op, f"eps must be finite and non-negative, got {eps}")
    if impl != "reference":
        return op_namespace(impl).intra_class_positional(labels, ignore_label, eps)
    return reference.intra_class_positional(labels, ignore_label, eps)
