"""Triton kernels of SC-GAN's semantic ops: semantic modulate (SCN) and candidate combine (SCC).

Mirrors ``csrc/cpu/semantic_kernel.cpp`` (same checks and messages, opmath accumulation). Both ops
mix K per-pixel semantic vectors into per-channel quantities; no dense gamma / beta is ever built.

Tiling: programs work on [CB channels x BLOCK pixels] tiles of one sample. A tile's gamma / beta
(SCN) or mixture (SCC) is accumulated over k in registers, so the vectors are read once per channel
block, x / grad_y once.

- semantic_modulate: grid (N * channel blocks, pixel blocks).
- semantic_modulate_backward, two kernels, no atomics (deterministic):
  ``_scn_backward_channels_kernel``, grid (N * channel blocks, pixel chunks): grad_x, and per program
  partial sums of grad_mean / grad_rstd per channel and of the bank gradient ([K x CB] in
  registers), reduced afterwards by ``torch.sum`` over the (n, chunk) dimension in a fixed order;
  ``_scn_backward_vectors_kernel``, grid (N, pixel blocks), loops over every channel block and owns
  its block of grad_vectors.
- candidate_combine: grid (N * channel blocks, pixel blocks); backward: grid (N, pixel blocks), each
  program loops over the channel blocks, writes grad_candidates and owns its grad_vectors block.
"""

import torch
import triton
import triton.language as tl

from .._extension import TRITON_INTERPRET
from ._common import check_activation, check_stats_of_x, register_kernel
from .stats import (
    acc_type,
    as_acc,
    check_dim,
    check_dtype,
    check_float,
    check_nonempty,
    check_same_device,
    check_shape,
    check_stats,
    opmath,
    to_out,
)

_CB = 16  # channels per tile
_BLOCK = 256  # pixels per tile
_TILE = 4096  # upper bound of K x BLOCK for the [K, BLOCK] accumulators of grad_vectors
_TARGET_PROGRAMS = 1024  # the backward's channel kernel splits the pixels into about this many programs


def _channel_block(c: int) -> int:
    return min(_CB, triton.next_power_of_2(c))


def _pixel_block(hw: int, cap: int = _BLOCK) -> int:
    return min(cap, triton.next_power_of_2(hw))


def _warps(tile: int) -> int:
    return 1 if TRITON_INTERPRET else max(1, min(8, tile // 512))


# ---------------------------------------------------------------------------------------------
# kernels: SCN


@triton.jit
def _scn_mix(v_ptr, bank_ptr, n, ch, cm, offs, pm, C, HW, K, init, col0, ACC: tl.constexpr, CB: tl.constexpr,
             BLOCK: tl.constexpr):
    """init + sum_k v[n, k, offs] * bank[k, col0 + ch] as a [CB, BLOCK] tile (k in order)."""
    out = tl.zeros([CB, BLOCK], ACC) + init
    for k in range(K):
        v = tl.load(v_ptr + (n * K + k) * HW + offs, mask=pm, other=0.0).to(ACC)
        w = tl.load(bank_ptr + k * 2 * C + col0 + ch, mask=cm, other=0.0).to(ACC)
        out += w[:, None] * v[None, :]
    return out


@triton.jit
def _scn_forward_kernel(
    x_ptr, mean_ptr, rstd_ptr, v_ptr, bank_ptr, y_ptr, C, HW, K, offset: "fp64",  # noqa: F821
    ACC: tl.constexpr, CB: tl.constexpr, BLOCK: tl.constexpr,
):
    ncb = tl.cdiv(C, CB)
    pid = tl.program_id(0)
    n = (pid // ncb).to(tl.int64)
    ch = (pid % ncb) * CB + tl.arange(0, CB)
    cm = ch < C
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    pm = offs < HW
    off = as_acc(offset, ACC)
    g = _scn_mix(v_ptr, bank_ptr, n, ch, cm, offs, pm, C, HW, K, off, 0, ACC, CB, BLOCK)
    b = _scn_mix(v_ptr, bank_ptr, n, ch, cm, offs, pm, C, HW, K, 0.0, C, ACC, CB, BLOCK)
    plane = n * C + ch
    mu = tl.load(mean_ptr + plane, mask=cm, other=0.0).to(ACC)
    r = tl.load(rstd_ptr + plane, mask=cm, other=0.0).to(ACC)
    idx = plane[:, None] * HW + offs[None, :]
    m2 = cm[:, None] & pm[None, :]
    x = tl.load(x_ptr + idx, mask=m2, other=0.0).to(ACC)
    y = (x - mu[:, None]) * r[:, None] * g + b
    tl.store(y_ptr + idx, to_out(y, y_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _scn_backward_channels_kernel(
    dy_ptr, x_ptr, mean_ptr, rstd_ptr, v_ptr, bank_ptr, gx_ptr, pstat_ptr, pbank_ptr, C, HW, K, NCHUNK, BPC,
    offset: "fp64", ACC: tl.constexpr, CB: tl.constexpr, BLOCK: tl.constexpr, KP: tl.constexpr,  # noqa: F821
):
    """grad_x of a [CB, BPC * BLOCK] slab, and its partial sums:
    pstat[n, c, chunk, :] = (sum dy (off + g), sum dy (off + g) (x - mean)),
    pbank[n, chunk, k, c] = sum dy xhat v_k and pbank[n, chunk, k, C + c] = sum dy v_k."""
    ncb = tl.cdiv(C, CB)
    pid = tl.program_id(0)
    n = (pid // ncb).to(tl.int64)
    ch = (pid % ncb) * CB + tl.arange(0, CB)
    cm = ch < C
    chunk = tl.program_id(1)
    plane = n * C + ch
    mu = tl.load(mean_ptr + plane, mask=cm, other=0.0).to(ACC)
    r = tl.load(rstd_ptr + plane, mask=cm, other=0.0).to(ACC)
    off = as_acc(offset, ACC)
    kk = tl.arange(0, KP)
    sdg = tl.zeros([CB], ACC)
    sdgx = tl.zeros([CB], ACC)
    acc_g = tl.zeros([KP, CB], ACC)
    acc_b = tl.zeros([KP, CB], ACC)
    for i in range(BPC):
        offs = (chunk * BPC + i) * BLOCK + tl.arange(0, BLOCK)
        pm = offs < HW
        m2 = cm[:, None] & pm[None, :]
        idx = plane[:, None] * HW + offs[None, :]
        g = _scn_mix(v_ptr, bank_ptr, n, ch, cm, offs, pm, C, HW, K, off, 0, ACC, CB, BLOCK)
        d = tl.load(dy_ptr + idx, mask=m2, other=0.0).to(ACC)
        xc = tl.where(m2, tl.load(x_ptr + idx, mask=m2, other=0.0).to(ACC) - mu[:, None], 0.0)
        dg = d * g
        tl.store(gx_ptr + idx, to_out(dg * r[:, None], gx_ptr.dtype.element_ty), mask=m2)
        sdg += tl.sum(dg, axis=1)
        sdgx += tl.sum(dg * xc, axis=1)
        dyxh = d * xc * r[:, None]
        for k in range(K):
            v = tl.load(v_ptr + (n * K + k) * HW + offs, mask=pm, other=0.0).to(ACC)
            sg = tl.sum(dyxh * v[None, :], axis=1)
            sb = tl.sum(d * v[None, :], axis=1)
            hit = kk[:, None] == k
            acc_g += tl.where(hit, sg[None, :], 0.0)
            acc_b += tl.where(hit, sb[None, :], 0.0)
    pidx = (plane * NCHUNK + chunk) * 2
    tl.store(pstat_ptr + pidx, sdg, mask=cm)
    tl.store(pstat_ptr + pidx + 1, sdgx, mask=cm)
    bidx = ((n * NCHUNK + chunk) * K + kk[:, None]) * 2 * C + ch[None, :]
    bm = (kk[:, None] < K) & cm[None, :]
    tl.store(pbank_ptr + bidx, acc_g, mask=bm)
    tl.store(pbank_ptr + bidx + C, acc_b, mask=bm)


@triton.jit
def _scn_backward_vectors_kernel(
    dy_ptr, x_ptr, mean_ptr, rstd_ptr, bank_ptr, gv_ptr, C, HW, K,
    ACC: tl.constexpr, CB: tl.constexpr, BLOCK: tl.constexpr, KP: tl.constexpr,
):
    """grad_v[n, k, p] = sum_c dy (xhat bank[k, c] + bank[k, C + c]) for one pixel block, all channels."""
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    pm = offs < HW
    kk = tl.arange(0, KP)
    acc = tl.zeros([KP, BLOCK], ACC)
    for c0 in range(0, C, CB):
        ch = c0 + tl.arange(0, CB)
        cm = ch < C
        plane = n * C + ch
        mu = tl.load(mean_ptr + plane, mask=cm, other=0.0).to(ACC)
        r = tl.load(rstd_ptr + plane, mask=cm, other=0.0).to(ACC)
        m2 = cm[:, None] & pm[None, :]
        idx = plane[:, None] * HW + offs[None, :]
        d = tl.load(dy_ptr + idx, mask=m2, other=0.0).to(ACC)
        x = tl.load(x_ptr + idx, mask=m2, other=0.0).to(ACC)
        dyxh = d * (x - mu[:, None]) * r[:, None]
        for k in range(K):
            wg = tl.load(bank_ptr + k * 2 * C + ch, mask=cm, other=0.0).to(ACC)
            wb = tl.load(bank_ptr + k * 2 * C + C + ch, mask=cm, other=0.0).to(ACC)
            s = tl.sum(dyxh * wg[:, None] + d * wb[:, None], axis=0)
            acc += tl.where(kk[:, None] == k, s[None, :], 0.0)
    out = gv_ptr + (n * K + kk[:, None]) * HW + offs[None, :]
    tl.store(out, to_out(acc, gv_ptr.dtype.element_ty), mask=(kk[:, None] < K) & pm[None, :])


# ---------------------------------------------------------------------------------------------
# kernels: SCC


@triton.jit
def _scc_forward_kernel(v_ptr, cand_ptr, y_ptr, C, HW, K, ACC: tl.constexpr, CB: tl.constexpr, BLOCK: tl.constexpr):
    ncb = tl.cdiv(C, CB)
    pid = tl.program_id(0)
    n = (pid // ncb).to(tl.int64)
    ch = (pid % ncb) * CB + tl.arange(0, CB)
    cm = ch < C
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    pm = offs < HW
    m2 = cm[:, None] & pm[None, :]
    s = tl.zeros([CB, BLOCK], ACC)
    for k in range(K):
        v = tl.load(v_ptr + (n * K + k) * HW + offs, mask=pm, other=0.0).to(ACC)
        cidx = ((n * K + k) * C + ch[:, None]) * HW + offs[None, :]
        s += v[None, :] * tl.load(cand_ptr + cidx, mask=m2, other=0.0).to(ACC)
    tl.store(y_ptr + (n * C + ch[:, None]) * HW + offs[None, :], to_out(s, y_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _scc_backward_kernel(
    dy_ptr, v_ptr, cand_ptr, gv_ptr, gcand_ptr, C, HW, K,
    ACC: tl.constexpr, CB: tl.constexpr, BLOCK: tl.constexpr, KP: tl.constexpr,
):
    """grad_cand = v_k dy and grad_v[n, k, p] = sum_c dy cand_k for one pixel block, all channels."""
    n = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    pm = offs < HW
    kk = tl.arange(0, KP)
    acc = tl.zeros([KP, BLOCK], ACC)
    out_ty = gcand_ptr.dtype.element_ty
    for c0 in range(0, C, CB):
        ch = c0 + tl.arange(0, CB)
        cm = ch < C
        m2 = cm[:, None] & pm[None, :]
        d = tl.load(dy_ptr + (n * C + ch[:, None]) * HW + offs[None, :], mask=m2, other=0.0).to(ACC)
        for k in range(K):
            v = tl.load(v_ptr + (n * K + k) * HW + offs, mask=pm, other=0.0).to(ACC)
            cidx = ((n * K + k) * C + ch[:, None]) * HW + offs[None, :]
            cand = tl.load(cand_ptr + cidx, mask=m2, other=0.0).to(ACC)
            tl.store(gcand_ptr + cidx, to_out(v[None, :] * d, out_ty), mask=m2)
            s = tl.sum(d * cand, axis=0)
            acc += tl.where(kk[:, None] == k, s[None, :], 0.0)
    out = gv_ptr + (n * K + kk[:, None]) * HW + offs[None, :]
    tl.store(out, to_out(acc, gv_ptr.dtype.element_ty), mask=(kk[:, None] < K) & pm[None, :])


# ---------------------------------------------------------------------------------------------
# checks (csrc/cpu/semantic_kernel.cpp, message for message)


def _check_semantic_inputs(x, mean, rstd, vectors, bank, op):
    check_activation(x, op)
    mean, rstd = check_stats(x, mean, rstd, op)
    check_float(vectors, op, "vectors")
    check_same_device(x, vectors, op, "x", "vectors")
    check_dim(vectors, 4, op, "vectors")
    check_nonempty(vectors, op, "vectors")
    k = vectors.shape[1]
    check_shape(vectors, (x.shape[0], k, x.shape[2], x.shape[3]), op, "vectors")
    check_dtype(vectors, x.dtype, op, "vectors")
    check_float(bank, op, "bank")
    check_same_device(x, bank, op, "x", "bank")
    check_dim(bank, 2, op, "bank")
    check_shape(bank, (k, 2 * x.shape[1]), op, "bank")
    check_dtype(bank, opmath(x.dtype), op, "bank")
    return x.contiguous(), mean, rstd, vectors.contiguous(), bank.contiguous()


def _check_grad_y(grad_y, ref, shape, ref_name, op):
    check_float(grad_y, op, "grad_y")
    check_same_device(ref, grad_y, op, ref_name, "grad_y")
    check_shape(grad_y, shape, op, "grad_y")
    check_dtype(grad_y, ref.dtype, op, "grad_y")
    return grad_y.contiguous()


def _check_combine_inputs(vectors, candidates, op):
    check_float(vectors, op, "vectors")
    check_dim(vectors, 4, op, "vectors")
    check_nonempty(vectors, op, "vectors")
    check_float(candidates, op, "candidates")
    check_same_device(vectors, candidates, op, "vectors", "candidates")
    check_dim(candidates, 5, op, "candidates")
    check_nonempty(candidates, op, "candidates")
    n, k, h, w = vectors.shape
    check_shape(candidates, (n, k, candidates.shape[2], h, w), op, "candidates")
    check_dtype(candidates, vectors.dtype, op, "candidates")
    return vectors.contiguous(), candidates.contiguous()


# ---------------------------------------------------------------------------------------------
# launchers


def semantic_modulate(x, mean, rstd, vectors, bank, offset=1.0, stats_of_x=0):
    op = "semantic_modulate"
    check_stats_of_x(stats_of_x, op)
    xc, mean, rstd, vc, bc = _check_semantic_inputs(x, mean, rstd, vectors, bank, op)
    n, c, h, w = x.shape
    hw, k = h * w, vectors.shape[1]
    cb, block = _channel_block(c), _pixel_block(hw)
    y = torch.empty((n, c, h, w), dtype=x.dtype, device=x.device)
    _scn_forward_kernel[(n * triton.cdiv(c, cb), triton.cdiv(hw, block))](
        xc, mean, rstd, vc, bc, y, c, hw, k, float(offset),
        ACC=acc_type(x.dtype), CB=cb, BLOCK=block, num_warps=_warps(cb * block),
    )
    return y


def semantic_modulate_backward(grad_y, x, mean, rstd, vectors, bank, offset):
    op = "semantic_modulate_backward"
    xc, mean, rstd, vc, bc = _check_semantic_inputs(x, mean, rstd, vectors, bank, op)
    dy = _check_grad_y(grad_y, x, x.shape, "x", op)
    n, c, h, w = x.shape
    hw, k = h * w, vectors.shape[1]
    acc, dev = opmath(x.dtype), x.device
    cb, block, kp = _channel_block(c), _pixel_block(hw), triton.next_power_of_2(k)
    ncb, nblocks = triton.cdiv(c, cb), triton.cdiv(hw, block)
    # Pixel chunks per (n, channel block): enough programs to fill a GPU, few partial tables.
    nchunk = min(nblocks, max(1, _TARGET_PROGRAMS // (n * ncb)))
    bpc = triton.cdiv(nblocks, nchunk)
    nchunk = triton.cdiv(nblocks, bpc)
    gx = torch.empty((n, c, h, w), dtype=x.dtype, device=dev)
    pstat = torch.empty((n, c, nchunk, 2), dtype=acc, device=dev)
    pbank = torch.empty((n * nchunk, k, 2 * c), dtype=acc, device=dev)
    _scn_backward_channels_kernel[(n * ncb, nchunk)](
        dy, xc, mean, rstd, vc, bc, gx, pstat, pbank, c, hw, k, nchunk, bpc, float(offset),
        ACC=acc_type(x.dtype), CB=cb, BLOCK=block, KP=kp, num_warps=_warps(cb * block),
    )
    sums = pstat.sum(2)  # (N, C, 2), fixed order
    gmean = -rstd * sums[..., 0]
    grstd = sums[..., 1].contiguous()
    gbank = pbank.sum(0)
    vblock = _pixel_block(hw, max(16, min(_BLOCK, _TILE // kp)))
    gv = torch.empty(vectors.shape, dtype=x.dtype, device=dev)
    _scn_backward_vectors_kernel[(n, triton.cdiv(hw, vblock))](
        dy, xc, mean, rstd, bc, gv, c, hw, k,
        ACC=acc_type(x.dtype), CB=cb, BLOCK=vblock, KP=kp, num_warps=_warps(max(cb, kp) * vblock),
    )
    return gx, gmean, grstd, gv, gbank


def candidate_combine(vectors, candidates):
    op = "candidate_combine"
    vc, cc = _check_combine_inputs(vectors, candidates, op)
    n, k, h, w = vectors.shape
    c, hw = candidates.shape[2], h * w
    cb, block = _channel_block(c), _pixel_block(hw)
    y = torch.empty((n, c, h, w), dtype=vectors.dtype, device=vectors.device)
    _scc_forward_kernel[(n * triton.cdiv(c, cb), triton.cdiv(hw, block))](
        vc, cc, y, c, hw, k, ACC=acc_type(vectors.dtype), CB=cb, BLOCK=block, num_warps=_warps(cb * block),
    )
    return y


def candidate_combine_backward(grad_y, vectors, candidates):
    op = "candidate_combine_backward"
    vc, cc = _check_combine_inputs(vectors, candidates, op)
    n, k, h, w = vectors.shape
    c, hw = candidates.shape[2], h * w
    dy = _check_grad_y(grad_y, vectors, (n, c, h, w), "vectors", op)
    kp = triton.next_power_of_2(k)
    cb, block = _channel_block(c), _pixel_block(hw, max(16, min(_BLOCK, _TILE // kp)))
    gv = torch.empty((n, k, h, w), dtype=vectors.dtype, device=vectors.device)
    gcand = torch.empty(candidates.shape, dtype=candidates.dtype, device=candidates.device)
    _scc_backward_kernel[(n, triton.cdiv(hw, block))](
        dy, vc, cc, gv, gcand, c, hw, k,
        ACC=acc_type(vectors.dtype), CB=cb, BLOCK=block, KP=kp, num_warps=_warps(max(cb, kp) * block),
    )
    return gv, gcand


register_kernel("semantic_modulate", semantic_modulate)
register_kernel("semantic_modulate_backward", semantic_modulate_backward)
register_kernel("candidate_combine", candidate_combine)
register_kernel("candidate_combine_backward", candidate_combine_backward)
