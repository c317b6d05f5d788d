"""Label tap gather (the label convolution) in Triton (semantics: csrc/cpu/label_conv_kernel.cpp).

    out[n, o, h, w] = sum_{ty, tx} table[t, o, ty*k + tx, label(h + ty - k//2, w + tx - k//2)]

with zero padding (a tap outside the image contributes nothing) and t = n if T == N else 0.

Grid (S, N, CG) of :mod:`semnorm.triton._labels`. Forward: per (pixel block, output-channel chunk)
an accumulator tile in opmath, and for each of the k*k taps the labels of the shifted pixels
(sampled in the kernel; -1 outside the image) gather one table column per pixel. One store per
output element, no one-hot, no im2col.

Backward (``label_tap_gather_backward``): the output-gradient tile is read once (opmath), and for
each tap it is scatter-added by the shifted labels into grad_table[t, o, tap, :] with
:func:`scatter_add_by_label`: relaxed float atomics into a (T, Cout, k*k, L) opmath table on the fast
path; under ``torch.use_deterministic_algorithms(True)`` per-program partial tables (N, S, Cout, k*k, L)
updated by plain read-modify-write and summed by torch over S (and over N for a shared table).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_activation, check_labels, fail, nearest_scale, register_kernel
from ._labels import deterministic, gather_by_label, opmath, plan_tiles, scatter_add_by_label, tile_labels, upcast


@triton.jit
def _label_tap_gather_forward_kernel(
    table_ptr, lab_ptr, out_ptr,
    C, K, L, H, W, HW, Hl, Wl, scale_h, scale_w, table_stride,
    pix_per_prog, c_per_prog,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, F64: tl.constexpr,
):
    s = tl.program_id(0)
    n = tl.program_id(1)
    g = tl.program_id(2)
    KK = K * K
    r = K // 2
    p_begin = s * pix_per_prog
    p_end = tl.minimum(p_begin + pix_per_prog, HW)
    c_begin = g * c_per_prog
    c_end = tl.minimum(c_begin + c_per_prog, C)
    table = table_ptr + n.to(tl.int64) * table_stride  # table_stride = 0 for a shared table
    lab_base = lab_ptr + n.to(tl.int64) * Hl * Wl
    for p0 in range(p_begin, p_end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pm = p < p_end
        h = p // W
        w = p % W
        for c0 in range(c_begin, c_end, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            cm = c < c_end
            rows = table + c.to(tl.int64) * KK * L
            if F64:
                acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float64)
            else:
                acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
            for tap in range(KK):
                lab = tile_labels(lab_base, h + (tap // K - r), w + (tap % K - r), H, W, Hl, Wl, scale_h, scale_w, L, pm)
                acc += gather_by_label(rows + tap * L, 1, lab, cm).to(acc.dtype)
            out_rows = (n * C + c).to(tl.int64) * HW
            tl.store(out_ptr + out_rows[:, None] + p[None, :], acc, mask=cm[:, None] & pm[None, :])


@triton.jit
def _label_tap_gather_backward_kernel(
    grad_ptr, lab_ptr, gt_ptr,
    C, K, L, H, W, HW, Hl, Wl, scale_h, scale_w, sample_stride, slot_stride,
    pix_per_prog, c_per_prog,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, DETERMINISTIC: tl.constexpr, F64: tl.constexpr,
):
    s = tl.program_id(0)
    n = tl.program_id(1)
    g = tl.program_id(2)
    KK = K * K
    r = K // 2
    p_begin = s * pix_per_prog
    p_end = tl.minimum(p_begin + pix_per_prog, HW)
    c_begin = g * c_per_prog
    c_end = tl.minimum(c_begin + c_per_prog, C)
    # grad table of sample n (atomics: table t, sample_stride = 0 when shared) or our partial table
    table = gt_ptr + n.to(tl.int64) * sample_stride + s.to(tl.int64) * slot_stride
    lab_base = lab_ptr + n.to(tl.int64) * Hl * Wl
    for p0 in range(p_begin, p_end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pm = p < p_end
        h = p // W
        w = p % W
        for c0 in range(c_begin, c_end, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            cm = c < c_end
            rows = (n * C + c).to(tl.int64) * HW
            gv = upcast(tl.load(grad_ptr + rows[:, None] + p[None, :], mask=cm[:, None] & pm[None, :], other=0), F64)
            trows = table + c.to(tl.int64) * KK * L
            for tap in range(KK):
                lab = tile_labels(lab_base, h + (tap // K - r), w + (tap % K - r), H, W, Hl, Wl, scale_h, scale_w, L, pm)
                scatter_add_by_label(trows + tap * L, 1, gv, lab, cm, DETERMINISTIC)
        if DETERMINISTIC:
            tl.debug_barrier()  # this block's read-modify-writes before the next block's


def _check_kernel_size(kernel_size, op):
    if not (kernel_size >= 1 and kernel_size % 2 == 1):
        fail(op, f"kernel_size must be a positive odd integer, got {kernel_size}")


def _geometry(labels, h, w):
    hl, wl = labels.shape[1], labels.shape[2]
    return hl, wl, nearest_scale(hl, h), nearest_scale(wl, w)


def label_tap_gather(table: torch.Tensor, labels: torch.Tensor, kernel_size: int, height: int, width: int) -> torch.Tensor:
    op = "label_tap_gather"
    if not table.is_floating_point():
        fail(op, f"table must be a floating point tensor, got {table.dtype}", TypeError)
    if table.dim() != 4:
        fail(op, f"table must have 4 dimensions, got shape {tuple(table.shape)}")
    if table.numel() == 0:
        fail(op, f"table must not be empty, got shape {tuple(table.shape)}")
    _check_kernel_size(kernel_size, op)
    if labels.device != table.device:
        fail(op, f"table is on {table.device} but labels is on {labels.device}")
    h, w = int(height), int(width)
    if h <= 0 or w <= 0:
        fail(op, f"height and width must be positive, got {h} x {w}")
    if labels.dim() != 3:
        fail(op, f"labels must have 3 dimensions, got shape {tuple(labels.shape)}")
    n = labels.shape[0]
    t_count, c, kk, L = table.shape
    k = kernel_size
    if kk != k * k:
        fail(op, f"table must have shape (T, Cout, kernel_size^2 = {k * k}, L), got {tuple(table.shape)}")
    if t_count not in (1, n):
        fail(op, f"table must have 1 or N = {n} entries in dimension 0 (one per sample), got {t_count}")
    labels = check_labels(labels, n, L, table.device, op)
    tc = table.contiguous()
    out = torch.empty(n, c, h, w, dtype=table.dtype, device=table.device)
    tiles = plan_tiles(n, c, h * w, table.device)
    _label_tap_gather_forward_kernel[tiles.grid(n)](
        tc, labels, out,
        c, k, L, h, w, h * w, *_geometry(labels, h, w), 0 if t_count == 1 else c * kk * L,
        tiles.pix_per_prog, tiles.c_per_prog,
        BLOCK_P=tiles.block_p, BLOCK_C=tiles.block_c, F64=table.dtype == torch.float64,
    )
    return out


def label_tap_gather_backward(grad_out: torch.Tensor, labels: torch.Tensor, num_tables: int, num_classes: int,
                              kernel_size: int) -> torch.Tensor:
    op = "label_tap_gather_backward"
    check_activation(grad_out, op, "grad_out")
    _check_kernel_size(kernel_size, op)
    if labels.device != grad_out.device:
        fail(op, f"grad_out is on {grad_out.device} but labels is on {labels.device}")
    n, c, h, w = grad_out.shape
    t_count, k, L = num_tables, kernel_size, num_classes
    if t_count not in (1, n):
        fail(op, f"num_tables must be 1 or N = {n}, got {t_count}")
    labels = check_labels(labels, n, L, grad_out.device, op)
    gc = grad_out.contiguous()
    acc = opmath(grad_out.dtype)
    kk = k * k
    table_elems = c * kk * L
    det = deterministic()
    tiles = plan_tiles(n, c, h * w, grad_out.device, partial_elems=table_elems if det else 0)
    if det:
        partial = torch.zeros(n, tiles.s, c, kk, L, dtype=acc, device=grad_out.device)
        sample_stride, slot_stride = tiles.s * table_elems, table_elems
    else:
        partial = torch.zeros(t_count, 1, c, kk, L, dtype=acc, device=grad_out.device)
        sample_stride, slot_stride = (0 if t_count == 1 else table_elems), 0
    _label_tap_gather_backward_kernel[tiles.grid(n)](
        gc, labels, partial,
        c, k, L, h, w, h * w, *_geometry(labels, h, w), sample_stride, slot_stride,
        tiles.pix_per_prog, tiles.c_per_prog,
        BLOCK_P=tiles.block_p, BLOCK_C=tiles.block_c, DETERMINISTIC=det, F64=acc == torch.float64,
    )
    if det:
        grad_table = partial.sum((0, 1)).unsqueeze(0) if t_count == 1 else partial.sum(1)
    else:
        grad_table = partial[:, 0]
    return grad_table.to(grad_out.dtype)


register_kernel("label_tap_gather", label_tap_gather)
register_kernel("label_tap_gather_backward", label_tap_gather_backward)
