"""Triton kernels of the norm statistics (channel_moments) and the fused normalize + modulate.

Mirrors ``csrc/cpu/stats_kernel.cpp`` (same checks, same messages, same dtypes: statistics and
tables in opmath, float32 or float64 for float64 inputs; activations and their gradients in x's dtype).

Tiling: every kernel runs on a 2-D grid (N*C planes) x (blocks of BLOCK pixels of a plane), one
block per program, so one plane of (4, 128, 256, 256) spreads over 64 programs and tiny planes cost
one program each. x and grad_y are read once.

- channel_moments: each program computes its block's sum and M2 around the block mean (a two-pass
  over registers: no E[x^2] - E[x]^2), then ``_moments_combine_kernel`` merges the block partials of a
  (n, c) plane or of a channel (all N planes) with Chan's formula in a fixed order:
  ``mean = sum / count``, ``M2 = sum_i M2_i + sum_i count_i * (mean_i - mean)^2``.
- channel_moments_backward / normalize_modulate_backward: the elementwise gradients are written by
  the block programs; the per-plane and per-channel reductions (grad_mean, grad_rstd, grad_blend,
  grad_noise_scale) go through per-program partial sums, reduced by ``torch.sum`` over a fixed
  dimension. No atomics anywhere in this file: the results are deterministic run to run, so there is
  no separate deterministic path (the partial tables are tiny next to x).
"""


import torch
import triton
import triton.language as tl

from .._extension import TRITON_INTERPRET
from ._common import check_activation, check_stats_of_x, fail, register_kernel

# Pixels per program. The interpreter pays per program, so small tests want few of them anyway.
_BLOCK = 1024
_COMBINE_BLOCK = 256


def opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def acc_type(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def block_size(hw: int) -> int:
    return min(_BLOCK, triton.next_power_of_2(hw))


def num_warps(block: int) -> int:
    return 1 if TRITON_INTERPRET else max(1, min(8, block // 256))


# ---------------------------------------------------------------------------------------------
# argument checks (the C++ kernel's, message for message; shapes printed as tuples)


def _present(t) -> bool:
    return t is not None


def check_same_device(a: torch.Tensor, b: torch.Tensor, op: str, name_a: str, name_b: str) -> None:
    if a.device != b.device:
        fail(op, f"{name_a} is on {a.device} but {name_b} is on {b.device}")


def check_shape(t: torch.Tensor, expected, op: str, name: str) -> None:
    if tuple(t.shape) != tuple(expected):
        fail(op, f"{name} must have shape {tuple(expected)}, got {tuple(t.shape)}")


def check_dtype(t: torch.Tensor, expected: torch.dtype, op: str, name: str) -> None:
    if t.dtype != expected:
        fail(op, f"{name} must have dtype {expected}, got {t.dtype}", TypeError)


def check_defined(t, op: str, name: str) -> None:
    if t is None:
        fail(op, f"{name} is required")


def check_float(t: torch.Tensor, op: str, name: str) -> None:
    check_defined(t, op, name)
    if not t.is_floating_point():
        fail(op, f"{name} must be a floating point tensor, got {t.dtype}", TypeError)


def check_dim(t: torch.Tensor, dim: int, op: str, name: str) -> None:
    if t.dim() != dim:
        fail(op, f"{name} must have {dim} dimensions, got shape {tuple(t.shape)}")


def check_nonempty(t: torch.Tensor, op: str, name: str) -> None:
    if t.numel() == 0:
        fail(op, f"{name} must not be empty, got shape {tuple(t.shape)}")


def check_opmath(t: torch.Tensor, x: torch.Tensor, shape, op: str, name: str) -> torch.Tensor:
    """A tensor of ``shape`` in x's opmath dtype on x's device (device, shape, dtype: the C++ order)."""
    check_defined(t, op, name)
    check_same_device(x, t, op, "x", name)
    check_shape(t, shape, op, name)
    check_dtype(t, opmath(x.dtype), op, name)
    return t.contiguous()


def check_stats(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, op: str):
    """mean / rstd: (N, C) in x's opmath dtype, on x's device; returns them contiguous."""
    shape = (x.shape[0], x.shape[1])
    return check_opmath(mean, x, shape, op, "mean"), check_opmath(rstd, x, shape, op, "rstd")


def check_dense(t: torch.Tensor, x: torch.Tensor, op: str, name: str) -> torch.Tensor:
    """A dense (N, C, H, W) map in x's dtype; returns it contiguous."""
    check_defined(t, op, name)
    check_same_device(x, t, op, "x", name)
    check_shape(t, x.shape, op, name)
    check_dtype(t, x.dtype, op, name)
    return t.contiguous()


def check_noise(noise, noise_scale, x: torch.Tensor, op: str):
    if _present(noise) != _present(noise_scale):
        alone = "noise" if _present(noise) else "noise_scale"
        fail(op, f"noise and noise_scale must be given together (got {alone} alone)")
    if noise is None:
        return None, None
    n, c, h, w = x.shape
    return check_opmath(noise, x, (n, h, w), op, "noise"), check_opmath(noise_scale, x, (c,), op, "noise_scale")


def check_moment(t: torch.Tensor, x: torch.Tensor, per_instance: bool, op: str, name: str) -> torch.Tensor:
    shape = (x.shape[0], x.shape[1]) if per_instance else (x.shape[1],)
    return check_opmath(t, x, shape, op, name)


# ---------------------------------------------------------------------------------------------
# kernels


# Float scalar arguments are annotated "fp64": Triton passes an unannotated float as float32, an
# annotated one as float64 (the kernels round it once to their opmath type with as_acc). It must be the
# string literal (a global name is refused inside @jit), hence the F821 noqa for linters.

# The interpreter converts float32 to bfloat16 by truncation; to_out rounds there by hand.
_INTERPRET = tl.constexpr(TRITON_INTERPRET)


@triton.jit
def to_out(v, ty: tl.constexpr):
    """``v`` (opmath) cast to the output dtype ``ty``, rounding to nearest even like the GPU and ATen.

    Under the interpreter (which truncates float32 -> bfloat16) the float32 bits are rounded to
    bfloat16's precision first, so the truncation that follows is exact.
    """
    if _INTERPRET:
        if ty == tl.bfloat16:
            bits = v.to(tl.float32).to(tl.uint32, bitcast=True)
            rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            finite = (bits & 0x7F800000) != 0x7F800000
            v = tl.where(finite, rounded, bits).to(tl.float32, bitcast=True)
    return v.to(ty)


@triton.jit
def as_acc(v, ACC: tl.constexpr):
    """A scalar argument (int, or a float passed as fp64) as an ACC scalar, rounded once.

    Float arguments are annotated "fp64" (Triton would pass them as fp32), so float64 kernels get
    the exact value and float32 kernels the value rounded once, like ``static_cast<acc>`` in C++.
    Adding to a zero also turns an argument Triton specialised to a constant (ints equal to 1) into a
    tensor, in the compiler and in the interpreter alike.
    """
    return (tl.zeros([], tl.float64) + v).to(ACC)


@triton.jit
def _effective_x(x_ptr, noise_ptr, scale_ptr, plane, n, c, offs, mask, HW, NOISE: tl.constexpr, ACC: tl.constexpr):
    """x + noise_scale[c] * noise[n, p] in opmath for the pixels ``offs`` of plane ``plane``."""
    xe = tl.load(x_ptr + plane * HW + offs, mask=mask, other=0.0).to(ACC)
    if NOISE:
        s = tl.load(scale_ptr + c).to(ACC)
        z = tl.load(noise_ptr + n * HW + offs, mask=mask, other=0.0).to(ACC)
        xe += s * z
    return xe


@triton.jit
def _moments_block_kernel(
    x_ptr, noise_ptr, scale_ptr, psum_ptr, pm2_ptr, C, HW, NB,
    NOISE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    """Sum and M2 around the block mean of one block of one (n, c) plane -> partial[plane, block]."""
    plane = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    n, c = plane // C, plane % C
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < HW
    xe = _effective_x(x_ptr, noise_ptr, scale_ptr, plane, n, c, offs, mask, HW, NOISE, ACC)
    xe = tl.where(mask, xe, 0.0)
    count = tl.minimum(HW - blk * BLOCK, BLOCK).to(ACC)
    s = tl.sum(xe, axis=0)
    d = tl.where(mask, xe - s / count, 0.0)
    tl.store(psum_ptr + plane * NB + blk, s)
    tl.store(pm2_ptr + plane * NB + blk, tl.sum(d * d, axis=0))


@triton.jit
def _moments_combine_kernel(
    psum_ptr, pm2_ptr, mean_ptr, m2_ptr, C, HW, NB, PB, R, count,
    PER_INSTANCE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    """Chan's combination of the R = (N *) NB block partials of one output (a plane or a channel).

    Partial i of the output is block i % NB (of PB pixels, the last one ragged) of plane i // NB
    (per channel: plane n * C + c). Two fixed-order passes: the total sum gives the mean (``count``
    values), then M2 = sum_i M2_i + count_i (mean_i - mean)^2.
    """
    o = tl.program_id(0).to(tl.int64)
    total = tl.zeros([BLOCK], ACC)
    for r0 in range(0, R, BLOCK):
        i = r0 + tl.arange(0, BLOCK)
        if PER_INSTANCE:
            idx = o * NB + i
        else:
            idx = ((i // NB) * C + o) * NB + i % NB
        total += tl.load(psum_ptr + idx, mask=i < R, other=0.0)
    mean = tl.sum(total, axis=0) / as_acc(count, ACC)
    acc = tl.zeros([BLOCK], ACC)
    for r0 in range(0, R, BLOCK):
        i = r0 + tl.arange(0, BLOCK)
        m = i < R
        if PER_INSTANCE:
            idx = o * NB + i
        else:
            idx = ((i // NB) * C + o) * NB + i % NB
        cnt = tl.minimum(HW - (i % NB) * PB, PB).to(ACC)
        s = tl.load(psum_ptr + idx, mask=m, other=0.0)
        q = tl.load(pm2_ptr + idx, mask=m, other=0.0)
        d = s / cnt - mean
        acc += tl.where(m, q + cnt * d * d, 0.0)
    tl.store(mean_ptr + o, mean)
    tl.store(m2_ptr + o, tl.sum(acc, axis=0))


@triton.jit
def _moments_backward_kernel(
    gmean_ptr, gm2_ptr, x_ptr, mean_ptr, noise_ptr, scale_ptr, gx_ptr, partial_ptr, C, HW, NB, count,
    PER_INSTANCE: tl.constexpr, NOISE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    """grad_x = grad_mean / M + 2 grad_m2 (x_eff - mean); with noise, partial[plane, block] = sum grad_x * noise."""
    plane = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    n, c = plane // C, plane % C
    k = plane if PER_INSTANCE else c
    a = tl.load(gmean_ptr + k).to(ACC) * (1.0 / as_acc(count, ACC))
    b = 2.0 * tl.load(gm2_ptr + k).to(ACC)
    mu = tl.load(mean_ptr + k).to(ACC)
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < HW
    xe = _effective_x(x_ptr, noise_ptr, scale_ptr, plane, n, c, offs, mask, HW, NOISE, ACC)
    g = a + b * (xe - mu)
    tl.store(gx_ptr + plane * HW + offs, to_out(g, gx_ptr.dtype.element_ty), mask=mask)
    if NOISE:
        z = tl.load(noise_ptr + n * HW + offs, mask=mask, other=0.0).to(ACC)
        tl.store(partial_ptr + plane * NB + blk, tl.sum(tl.where(mask, g * z, 0.0), axis=0))


@triton.jit
def _modulate_gb(g_ptr, b_ptr, g2_ptr, b2_ptr, blend_ptr, idx, mask, BLEND: tl.constexpr, ACC: tl.constexpr):
    """(g, b, g1, g2, b1, b2) at ``idx``: gamma / beta, or SEAN's blend of the two branches."""
    g1 = tl.load(g_ptr + idx, mask=mask, other=0.0).to(ACC)
    b1 = tl.load(b_ptr + idx, mask=mask, other=0.0).to(ACC)
    if BLEND:
        bg = tl.load(blend_ptr).to(ACC)
        bb = tl.load(blend_ptr + 1).to(ACC)
        g2 = tl.load(g2_ptr + idx, mask=mask, other=0.0).to(ACC)
        b2 = tl.load(b2_ptr + idx, mask=mask, other=0.0).to(ACC)
        g = bg * g1 + (1.0 - bg) * g2
        b = bb * b1 + (1.0 - bb) * b2
    else:
        g2 = g1
        b2 = b1
        g = g1
        b = b1
    return g, b, g1, g2, b1, b2


@triton.jit
def _modulate_forward_kernel(
    x_ptr, mean_ptr, rstd_ptr, g_ptr, b_ptr, g2_ptr, b2_ptr, blend_ptr, noise_ptr, scale_ptr, y_ptr, C, HW,
    offset: "fp64",  # noqa: F821
    BLEND: tl.constexpr, NOISE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    plane = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    n, c = plane // C, plane % C
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < HW
    idx = plane * HW + offs
    mu = tl.load(mean_ptr + plane).to(ACC)
    r = tl.load(rstd_ptr + plane).to(ACC)
    offset = as_acc(offset, ACC)
    xe = _effective_x(x_ptr, noise_ptr, scale_ptr, plane, n, c, offs, mask, HW, NOISE, ACC)
    g, b, _g1, _g2, _b1, _b2 = _modulate_gb(g_ptr, b_ptr, g2_ptr, b2_ptr, blend_ptr, idx, mask, BLEND, ACC)
    y = (xe - mu) * r * (offset + g) + b
    tl.store(y_ptr + idx, to_out(y, y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _modulate_backward_kernel(
    dy_ptr, x_ptr, mean_ptr, rstd_ptr, g_ptr, b_ptr, g2_ptr, b2_ptr, blend_ptr, noise_ptr, scale_ptr,
    gx_ptr, gg_ptr, gb_ptr, gg2_ptr, gb2_ptr, partial_ptr, C, HW, NB, offset: "fp64",  # noqa: F821
    BLEND: tl.constexpr, NOISE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    """Elementwise gradients of one block, and its 5 partial sums -> partial[plane, block, :]:
    dy (off + g), dy (off + g) (x_eff - mean), blend[0], blend[1], noise_scale."""
    plane = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    n, c = plane // C, plane % C
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < HW
    idx = plane * HW + offs
    mu = tl.load(mean_ptr + plane).to(ACC)
    r = tl.load(rstd_ptr + plane).to(ACC)
    offset = as_acc(offset, ACC)
    xe = _effective_x(x_ptr, noise_ptr, scale_ptr, plane, n, c, offs, mask, HW, NOISE, ACC)
    d = tl.load(dy_ptr + idx, mask=mask, other=0.0).to(ACC)
    g, _b, g1, g2, b1, b2 = _modulate_gb(g_ptr, b_ptr, g2_ptr, b2_ptr, blend_ptr, idx, mask, BLEND, ACC)
    xc = tl.where(mask, xe - mu, 0.0)
    dg = d * (offset + g)
    gx = dg * r
    dxhat = d * xc * r
    tl.store(gx_ptr + idx, to_out(gx, gx_ptr.dtype.element_ty), mask=mask)
    out_ty = gx_ptr.dtype.element_ty
    pbase = (plane * NB + blk) * 5
    tl.store(partial_ptr + pbase, tl.sum(dg, axis=0))
    tl.store(partial_ptr + pbase + 1, tl.sum(dg * xc, axis=0))
    if BLEND:
        bg = tl.load(blend_ptr).to(ACC)
        bb = tl.load(blend_ptr + 1).to(ACC)
        tl.store(gg_ptr + idx, to_out(bg * dxhat, out_ty), mask=mask)
        tl.store(gg2_ptr + idx, to_out((1.0 - bg) * dxhat, out_ty), mask=mask)
        tl.store(gb_ptr + idx, to_out(bb * d, out_ty), mask=mask)
        tl.store(gb2_ptr + idx, to_out((1.0 - bb) * d, out_ty), mask=mask)
        tl.store(partial_ptr + pbase + 2, tl.sum(dxhat * (g1 - g2), axis=0))
        tl.store(partial_ptr + pbase + 3, tl.sum(d * (b1 - b2), axis=0))
    else:  # grad_beta is grad_y itself: not written (semnorm/ops/stats.py)
        tl.store(gg_ptr + idx, to_out(dxhat, out_ty), mask=mask)
    if NOISE:
        z = tl.load(noise_ptr + n * HW + offs, mask=mask, other=0.0).to(ACC)
        tl.store(partial_ptr + pbase + 4, tl.sum(gx * z, axis=0))


# ---------------------------------------------------------------------------------------------
# launchers


def channel_moments(x, per_instance, noise=None, noise_scale=None):
    op = "channel_moments"
    check_activation(x, op)
    nz, ns = check_noise(noise, noise_scale, x, op)
    n, c, h, w = x.shape
    hw = h * w
    xc = x.contiguous()
    acc = opmath(x.dtype)
    block = block_size(hw)
    nb = triton.cdiv(hw, block)
    psum = torch.empty(n * c, nb, dtype=acc, device=x.device)
    pm2 = torch.empty_like(psum)
    noise_flag = nz is not None
    _moments_block_kernel[(n * c, nb)](
        xc, nz if noise_flag else xc, ns if noise_flag else xc, psum, pm2, c, hw, nb,
        NOISE=noise_flag, ACC=acc_type(x.dtype), BLOCK=block, num_warps=num_warps(block),
    )
    shape = (n, c) if per_instance else (c,)
    mean = torch.empty(shape, dtype=acc, device=x.device)
    m2 = torch.empty(shape, dtype=acc, device=x.device)
    r = nb if per_instance else n * nb
    cblock = min(_COMBINE_BLOCK, triton.next_power_of_2(r))
    _moments_combine_kernel[(mean.numel(),)](
        psum, pm2, mean, m2, c, hw, nb, block, r, hw * (1 if per_instance else n),
        PER_INSTANCE=bool(per_instance), ACC=acc_type(x.dtype), BLOCK=cblock, num_warps=1,
    )
    return mean, m2


def channel_moments_backward(grad_mean, grad_m2, x, mean, per_instance, noise=None, noise_scale=None):
    op = "channel_moments_backward"
    check_activation(x, op)
    gmean = check_moment(grad_mean, x, per_instance, op, "grad_mean")
    gm2 = check_moment(grad_m2, x, per_instance, op, "grad_m2")
    mu = check_moment(mean, x, per_instance, op, "mean")
    nz, ns = check_noise(noise, noise_scale, x, op)
    n, c, h, w = x.shape
    hw = h * w
    xc = x.contiguous()
    acc = opmath(x.dtype)
    block = block_size(hw)
    nb = triton.cdiv(hw, block)
    noise_flag = nz is not None
    grad_x = torch.empty((n, c, h, w), dtype=x.dtype, device=x.device)
    partial = torch.empty((n, c, nb) if noise_flag else (1,), dtype=acc, device=x.device)
    count = hw if per_instance else n * hw
    _moments_backward_kernel[(n * c, nb)](
        gmean, gm2, xc, mu, nz if noise_flag else xc, ns if noise_flag else xc, grad_x, partial, c, hw, nb,
        count, PER_INSTANCE=bool(per_instance), NOISE=noise_flag, ACC=acc_type(x.dtype), BLOCK=block,
        num_warps=num_warps(block),
    )
    grad_scale = partial.sum((0, 2)) if noise_flag else torch.empty(0, dtype=acc, device=x.device)
    return grad_x, grad_scale


def _check_modulate(x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, op):
    check_activation(x, op)
    mean, rstd = check_stats(x, mean, rstd, op)
    gamma = check_dense(gamma, x, op, "gamma")
    beta = check_dense(beta, x, op, "beta")
    has_blend, has_g2, has_b2 = _present(blend), _present(gamma2), _present(beta2)
    if not (has_blend == has_g2 == has_b2):
        given = (("gamma2", has_g2), ("beta2", has_b2), ("blend", has_blend))
        alone = "".join(f" {name}" for name, there in given if there)
        fail(op, f"gamma2, beta2 and blend must be given together (SEAN's second branch), got{alone} alone")
    if has_blend:
        gamma2 = check_dense(gamma2, x, op, "gamma2")
        beta2 = check_dense(beta2, x, op, "beta2")
        check_same_device(x, blend, op, "x", "blend")
        check_shape(blend, (2,), op, "blend")
        check_dtype(blend, opmath(x.dtype), op, "blend")
        blend = blend.contiguous()
    nz, ns = check_noise(noise, noise_scale, x, op)
    return x.contiguous(), mean, rstd, gamma, beta, gamma2, beta2, blend, nz, ns


def normalize_modulate(x, mean, rstd, gamma, beta, gamma2=None, beta2=None, blend=None, noise=None, noise_scale=None,
                       offset=1.0, stats_of_x=0):
    op = "normalize_modulate"
    check_stats_of_x(stats_of_x, op)
    xc, mean, rstd, gamma, beta, gamma2, beta2, blend, nz, ns = _check_modulate(
        x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, op
    )
    n, c, h, w = x.shape
    hw = h * w
    block = block_size(hw)
    y = torch.empty((n, c, h, w), dtype=x.dtype, device=x.device)
    has_blend, has_noise = blend is not None, nz is not None
    _modulate_forward_kernel[(n * c, triton.cdiv(hw, block))](
        xc, mean, rstd, gamma, beta, gamma2 if has_blend else xc, beta2 if has_blend else xc,
        blend if has_blend else mean, nz if has_noise else mean, ns if has_noise else mean, y, c, hw, float(offset),
        BLEND=has_blend, NOISE=has_noise, ACC=acc_type(x.dtype), BLOCK=block, num_warps=num_warps(block),
    )
    return y


def normalize_modulate_backward(grad_y, x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, offset):
    op = "normalize_modulate_backward"
    xc, mean, rstd, gamma, beta, gamma2, beta2, blend, nz, ns = _check_modulate(
        x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, op
    )
    dy = check_dense(grad_y, x, op, "grad_y")
    n, c, h, w = x.shape
    hw = h * w
    block = block_size(hw)
    nb = triton.cdiv(hw, block)
    acc = opmath(x.dtype)
    dev = x.device
    has_blend, has_noise = blend is not None, nz is not None

    def dense(present):
        return torch.empty((n, c, h, w) if present else (0,), dtype=x.dtype, device=dev)

    # without a blend grad_beta equals grad_y: an empty output, and the autograd formula passes grad_y on
    gx, ggamma, gbeta, ggamma2, gbeta2 = dense(True), dense(True), dense(has_blend), dense(has_blend), dense(has_blend)
    partial = torch.zeros(n * c, nb, 5, dtype=acc, device=dev)
    _modulate_backward_kernel[(n * c, nb)](
        dy, xc, mean, rstd, gamma, beta, gamma2 if has_blend else xc, beta2 if has_blend else xc,
        blend if has_blend else mean, nz if has_noise else mean, ns if has_noise else mean,
        gx, ggamma, gbeta if has_blend else gx, ggamma2 if has_blend else gx, gbeta2 if has_blend else gx, partial, c,
        hw, nb, float(offset),
        BLEND=has_blend, NOISE=has_noise, ACC=acc_type(x.dtype), BLOCK=block, num_warps=num_warps(block),
    )
    sums = partial.sum(1)  # (N*C, 5), fixed order
    gmean = (-sums[:, 0] * rstd.reshape(-1)).view(n, c)
    grstd = sums[:, 1].reshape(n, c).clone()
    gblend = sums[:, 2:4].sum(0) if has_blend else torch.empty(0, dtype=acc, device=dev)
    gscale = sums[:, 4].view(n, c).sum(0) if has_noise else torch.empty(0, dtype=acc, device=dev)
    return gx, gmean, grstd, ggamma, gbeta, ggamma2, gbeta2, gblend, gscale


register_kernel("channel_moments", channel_moments)
register_kernel("channel_moments_backward", channel_moments_backward)
register_kernel("normalize_modulate", normalize_modulate)
register_kernel("normalize_modulate_backward", normalize_modulate_backward)
