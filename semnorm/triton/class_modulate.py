"""CLADE guided sampling fused with normalize + modulate in Triton (semantics: csrc/cpu/class_modulate_kernel.cpp).

    y = (x - mean[n,c]) * rstd[n,c] * (offset + weight[l,c] * sg[n,p]) + bias[l,c] * sb[n,p]

with l the label at pixel p (sampled in the kernel) and sg / sb the optional ICPE factors.

Both kernels use the grid (S, N, CG) of :mod:`semnorm.triton._labels`: per BLOCK_P-pixel block the
labels (and sg / sb) are loaded once, then each BLOCK_C-channel chunk is a contiguous x tile and a
gather of the (L, C) banks by label. No dense gamma/beta, no one-hot.

The backward reads x and grad_y once and produces everything in that pass:

- grad_x = dy * gamma_eff * rstd, stored per tile;
- per (n, c): sum(dy * gamma_eff) and sum(dy * gamma_eff * (x - mean)) -> grad_mean, grad_rstd. Each
  program adds its tile sums into its own row of an (S, N, C) partial buffer (plain read-modify-write,
  a barrier per pixel block), summed over S by torch: deterministic on both paths;
- grad_weight, grad_bias: segmented sums by label of dy * xhat (* sg) and dy (* sb), both tables in
  one walk over the tile's labels (``scatter_add2_by_label``): relaxed float atomics into the (L, C)
  tables on the fast path; under ``torch.use_deterministic_algorithms(True)`` per-program partial
  tables (N * S, L, C) and a torch sum over them;
- grad_sg, grad_sb (with ICPE factors): per-pixel sums over the program's channels, stored into a
  (CG, N, H*W) partial buffer (each element written once) and summed over CG by torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_activation, check_labels, check_stats_of_x, fail, nearest_scale, register_kernel
from ._labels import deterministic, gather_by_label, join_float, opmath, plan_tiles, scatter_add2_by_label, split_float, tile_labels, upcast


@triton.jit
def _class_modulate_forward_kernel(
    x_ptr, mean_ptr, rstd_ptr, lab_ptr, w_ptr, b_ptr, sg_ptr, sb_ptr, y_ptr,
    C, H, W, HW, Hl, Wl, scale_h, scale_w, L, off_hi, off_lo,
    pix_per_prog, c_per_prog,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, HAS_SG: tl.constexpr, HAS_SB: tl.constexpr, F64: tl.constexpr,
):
    s = tl.program_id(0)
    n = tl.program_id(1)
    g = tl.program_id(2)
    offset = join_float(off_hi, off_lo, F64)
    p_begin = s * pix_per_prog
    p_end = tl.minimum(p_begin + pix_per_prog, HW)
    c_begin = g * c_per_prog
    c_end = tl.minimum(c_begin + c_per_prog, C)
    pix = n.to(tl.int64) * HW
    lab_base = lab_ptr + n.to(tl.int64) * Hl * Wl
    for p0 in range(p_begin, p_end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pm = p < p_end
        lab = tile_labels(lab_base, p // W, p % W, H, W, Hl, Wl, scale_h, scale_w, L, pm)
        if HAS_SG:
            sg = tl.load(sg_ptr + pix + p, mask=pm, other=0)
        if HAS_SB:
            sb = tl.load(sb_ptr + pix + p, mask=pm, other=0)
        for c0 in range(c_begin, c_end, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            cm = c < c_end
            m = tl.load(mean_ptr + n * C + c, mask=cm, other=0)
            r = tl.load(rstd_ptr + n * C + c, mask=cm, other=0)
            wt = gather_by_label(w_ptr + c, C, lab, cm)
            bt = gather_by_label(b_ptr + c, C, lab, cm)
            rows = (n * C + c).to(tl.int64) * HW
            tile = rows[:, None] + p[None, :]
            tm = cm[:, None] & pm[None, :]
            xm = upcast(tl.load(x_ptr + tile, mask=tm, other=0), F64) - m[:, None]
            if HAS_SG:
                gamma = offset + wt * sg[None, :]
            else:
                gamma = offset + wt
            if HAS_SB:
                beta = bt * sb[None, :]
            else:
                beta = bt
            tl.store(y_ptr + tile, xm * r[:, None] * gamma + beta, mask=tm)


@triton.jit
def _class_modulate_backward_kernel(
    dy_ptr, x_ptr, mean_ptr, rstd_ptr, lab_ptr, w_ptr, b_ptr, sg_ptr, sb_ptr,
    dx_ptr, stat_ptr, gw_ptr, gb_ptr, dsg_ptr, dsb_ptr,
    N, C, H, W, HW, Hl, Wl, scale_h, scale_w, L, off_hi, off_lo,
    pix_per_prog, c_per_prog, table_slot,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, HAS_SG: tl.constexpr, HAS_SB: tl.constexpr,
    DETERMINISTIC: tl.constexpr, F64: tl.constexpr,
):
    s = tl.program_id(0)
    n = tl.program_id(1)
    g = tl.program_id(2)
    S = tl.num_programs(0)
    offset = join_float(off_hi, off_lo, F64)
    p_begin = s * pix_per_prog
    p_end = tl.minimum(p_begin + pix_per_prog, HW)
    c_begin = g * c_per_prog
    c_end = tl.minimum(c_begin + c_per_prog, C)
    pix = n.to(tl.int64) * HW
    # (S, N, C) partial sums of dy * gamma_eff and dy * gamma_eff * (x - mean): row (s, n) is ours
    stat_dg = stat_ptr + (s * N + n).to(tl.int64) * C
    stat_dgx = stat_dg + S.to(tl.int64) * N * C
    # the banks' gradients: shared (L, C) tables (atomics) or our partial table (deterministic)
    slot = (n * S + s).to(tl.int64) * table_slot
    gw_rows = gw_ptr + slot
    gb_rows = gb_ptr + slot
    # (CG, N, HW) partial per-pixel sums over our channels
    dsg_row = dsg_ptr + (g * N + n).to(tl.int64) * HW
    dsb_row = dsb_ptr + (g * N + n).to(tl.int64) * HW
    lab_base = lab_ptr + n.to(tl.int64) * Hl * Wl
    for p0 in range(p_begin, p_end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pm = p < p_end
        lab = tile_labels(lab_base, p // W, p % W, H, W, Hl, Wl, scale_h, scale_w, L, pm)
        if HAS_SG:
            sg = tl.load(sg_ptr + pix + p, mask=pm, other=0)
            acc_sg = tl.zeros([BLOCK_P], dtype=sg.dtype)
        if HAS_SB:
            sb = tl.load(sb_ptr + pix + p, mask=pm, other=0)
            acc_sb = tl.zeros([BLOCK_P], dtype=sb.dtype)
        for c0 in range(c_begin, c_end, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            cm = c < c_end
            m = tl.load(mean_ptr + n * C + c, mask=cm, other=0)
            r = tl.load(rstd_ptr + n * C + c, mask=cm, other=0)
            wt = gather_by_label(w_ptr + c, C, lab, cm)
            rows = (n * C + c).to(tl.int64) * HW
            tile = rows[:, None] + p[None, :]
            tm = cm[:, None] & pm[None, :]
            d = upcast(tl.load(dy_ptr + tile, mask=tm, other=0), F64)
            xm = tl.where(tm, upcast(tl.load(x_ptr + tile, mask=tm, other=0), F64) - m[:, None], 0)
            if HAS_SG:
                gamma = offset + wt * sg[None, :]
            else:
                gamma = offset + wt
            dg = d * gamma
            tl.store(dx_ptr + tile, dg * r[:, None], mask=tm)
            # per-(n, c) sums: read-modify-write of our own partial row
            old_dg = tl.load(stat_dg + c, mask=cm, other=0)
            old_dgx = tl.load(stat_dgx + c, mask=cm, other=0)
            tl.store(stat_dg + c, old_dg + tl.sum(dg, axis=1), mask=cm)
            tl.store(stat_dgx + c, old_dgx + tl.sum(dg * xm, axis=1), mask=cm)
            # bank gradients by label
            dxhat = d * xm * r[:, None]
            if HAS_SG:
                vw = dxhat * sg[None, :]
                acc_sg += tl.sum(dxhat * wt, axis=0)
            else:
                vw = dxhat
            if HAS_SB:
                vb = d * sb[None, :]
                acc_sb += tl.sum(d * gather_by_label(b_ptr + c, C, lab, cm), axis=0)
            else:
                vb = d
            scatter_add2_by_label(gw_rows + c, gb_rows + c, C, vw, vb, lab, cm, DETERMINISTIC)
        if HAS_SG:
            tl.store(dsg_row + p, acc_sg, mask=pm)
        if HAS_SB:
            tl.store(dsb_row + p, acc_sb, mask=pm)
        tl.debug_barrier()  # this block's read-modify-writes before the next block's


def _check_args(x, mean, rstd, labels, weight, bias, op):
    """The checks of the C++ kernel (check_args in class_modulate_kernel.cpp); returns contiguous labels."""
    check_activation(x, op)
    n, c = x.shape[:2]
    acc = opmath(x.dtype)
    for name, t in (("mean", mean), ("rstd", rstd)):
        if t is None:
            fail(op, f"{name} is required")
        if t.device != x.device:
            fail(op, f"x is on {x.device} but {name} is on {t.device}")
        if tuple(t.shape) != (n, c):
            fail(op, f"{name} must have shape {(n, c)}, got {tuple(t.shape)}")
        if t.dtype != acc:
            fail(op, f"{name} must have dtype {acc}, got {t.dtype}", TypeError)
    for name, t in (("weight", weight), ("bias", bias)):
        if not t.is_floating_point():
            fail(op, f"{name} must be a floating point tensor, got {t.dtype}", TypeError)
        if t.device != x.device:
            fail(op, f"x is on {x.device} but {name} is on {t.device}")
        if t.dim() != 2:
            fail(op, f"{name} must have 2 dimensions, got shape {tuple(t.shape)}")
        if t.numel() == 0:
            fail(op, f"{name} must not be empty, got shape {tuple(t.shape)}")
        if t.shape[1] != c:
            fail(op, f"{name} must have C = {c} columns (one per channel of x), got shape {tuple(t.shape)}")
        if t.dtype != acc:
            fail(op, f"{name} must have dtype {acc}, got {t.dtype}", TypeError)
    if bias.shape != weight.shape:
        fail(op, f"bias must have shape {tuple(weight.shape)}, got {tuple(bias.shape)}")
    return check_labels(labels, n, weight.shape[0], x.device, op)


def _check_pixel_map(t, x, op, name):
    if t is None:
        return None
    n, _, h, w = x.shape
    if t.device != x.device:
        fail(op, f"x is on {x.device} but {name} is on {t.device}")
    if tuple(t.shape) != (n, h, w):
        fail(op, f"{name} must have shape {(n, h, w)}, got {tuple(t.shape)}")
    if t.dtype != opmath(x.dtype):
        fail(op, f"{name} must have dtype {opmath(x.dtype)}, got {t.dtype}", TypeError)
    return t.contiguous()


def _label_geometry(labels, h, w):
    hl, wl = labels.shape[1], labels.shape[2]
    return hl, wl, nearest_scale(hl, h), nearest_scale(wl, w)


def class_modulate(x, mean, rstd, labels, weight, bias, scale_gamma=None, scale_beta=None, offset=0.0, stats_of_x=0):
    op = "class_modulate"
    check_stats_of_x(stats_of_x, op)
    labels = _check_args(x, mean, rstd, labels, weight, bias, op)
    sg = _check_pixel_map(scale_gamma, x, op, "scale_gamma")
    sb = _check_pixel_map(scale_beta, x, op, "scale_beta")
    n, c, h, w = x.shape
    L = weight.shape[0]
    y = torch.empty(n, c, h, w, dtype=x.dtype, device=x.device)
    tiles = plan_tiles(n, c, h * w, x.device)
    off_hi, off_lo = split_float(offset)
    xc, mc, rc, wc, bc = (t.contiguous() for t in (x, mean, rstd, weight, bias))
    _class_modulate_forward_kernel[tiles.grid(n)](
        xc, mc, rc, labels, wc, bc, sg if sg is not None else mc, sb if sb is not None else mc, y,
        c, h, w, h * w, *_label_geometry(labels, h, w), L, off_hi, off_lo,
        tiles.pix_per_prog, tiles.c_per_prog,
        BLOCK_P=tiles.block_p, BLOCK_C=tiles.block_c, HAS_SG=sg is not None, HAS_SB=sb is not None,
        F64=x.dtype == torch.float64,
    )
    return y


def class_modulate_backward(grad_y, x, mean, rstd, labels, weight, bias, scale_gamma=None, scale_beta=None, offset=0.0):
    op = "class_modulate_backward"
    labels = _check_args(x, mean, rstd, labels, weight, bias, op)
    if grad_y is None:
        fail(op, "grad_y is required")
    if grad_y.device != x.device:
        fail(op, f"x is on {x.device} but grad_y is on {grad_y.device}")
    if grad_y.shape != x.shape:
        fail(op, f"grad_y must have shape {tuple(x.shape)}, got {tuple(grad_y.shape)}")
    if grad_y.dtype != x.dtype:
        fail(op, f"grad_y must have dtype {x.dtype}, got {grad_y.dtype}", TypeError)
    sg = _check_pixel_map(scale_gamma, x, op, "scale_gamma")
    sb = _check_pixel_map(scale_beta, x, op, "scale_beta")
    n, c, h, w = x.shape
    L = weight.shape[0]
    acc = opmath(x.dtype)
    dev = x.device
    det = deterministic()
    tiles = plan_tiles(n, c, h * w, dev, partial_elems=2 * L * c if det else 0)
    grad_x = torch.empty(n, c, h, w, dtype=x.dtype, device=dev)
    stats = torch.zeros(2, tiles.s, n, c, dtype=acc, device=dev)
    slots = n * tiles.s if det else 1
    gw = torch.zeros(slots, L, c, dtype=acc, device=dev)
    gb = torch.zeros(slots, L, c, dtype=acc, device=dev)
    dsg = torch.empty(tiles.cg, n, h, w, dtype=acc, device=dev) if sg is not None else None
    dsb = torch.empty(tiles.cg, n, h, w, dtype=acc, device=dev) if sb is not None else None
    off_hi, off_lo = split_float(offset)
    xc, dyc, mc, rc, wc, bc = (t.contiguous() for t in (x, grad_y, mean, rstd, weight, bias))
    _class_modulate_backward_kernel[tiles.grid(n)](
        dyc, xc, mc, rc, labels, wc, bc, sg if sg is not None else mc, sb if sb is not None else mc,
        grad_x, stats, gw, gb, dsg if dsg is not None else stats, dsb if dsb is not None else stats,
        n, c, h, w, h * w, *_label_geometry(labels, h, w), L, off_hi, off_lo,
        tiles.pix_per_prog, tiles.c_per_prog, L * c if det else 0,
        BLOCK_P=tiles.block_p, BLOCK_C=tiles.block_c, HAS_SG=sg is not None, HAS_SB=sb is not None,
        DETERMINISTIC=det, F64=x.dtype == torch.float64,
    )
    grad_mean = -stats[0].sum(0) * rc  # fresh tensors (outputs must not be views with an offset)
    grad_rstd = stats[1].sum(0)
    grad_weight = gw.sum(0) if slots > 1 else gw[0]
    grad_bias = gb.sum(0) if slots > 1 else gb[0]

    def reduce_groups(t):
        if t is None:
            return torch.empty(0, dtype=acc, device=dev)
        return t.sum(0) if t.shape[0] > 1 else t[0]

    return grad_x, grad_mean, grad_rstd, grad_weight, grad_bias, reduce_groups(dsg), reduce_groups(dsb)


register_kernel("class_modulate", class_modulate)
register_kernel("class_modulate_backward", class_modulate_backward)
