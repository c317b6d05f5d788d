"""Region pool and region broadcast in Triton (see csrc/cpu/region_kernel.cpp for the semantics).

- ``region_pool``: grid (S, N, CG) over (pixel ranges, samples, channel groups). A program samples
  the labels of each BLOCK_P-pixel block once, then for each BLOCK_C-channel chunk of its group
  loads the x tile (contiguous along pixels, upcast to opmath) and scatter-adds it into the
  (N, L, C) sums with :func:`scatter_add_by_label` -- relaxed float atomics on the fast path;
  under ``torch.use_deterministic_algorithms(True)`` per-program partial tables (N, S, L, C)
  updated by plain read-modify-write and summed over S by torch. The counts are int64 atomics
  (exact in any order) from the programs of channel group 0. x is read once; the mean division and
  the cast to x's dtype act on the small (N, L, C) table.
- ``region_broadcast``: same grid; each (channel chunk, pixel block) tile is a gather of
  ``codes[n, label, c]`` stored contiguously along the pixels. No reduction.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_activation, check_labels, fail, nearest_scale, register_kernel
from ._labels import count_by_label, deterministic, gather_by_label, opmath, plan_tiles, scatter_add_by_label, tile_labels, upcast


@triton.jit
def _region_pool_kernel(
    x_ptr, lab_ptr, sums_ptr, cnt_ptr,
    C, H, W, HW, Hl, Wl, scale_h, scale_w, L,
    pix_per_prog, c_per_prog, slot_stride, sample_stride,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, DETERMINISTIC: tl.constexpr, F64: tl.constexpr,
):
    s = tl.program_id(0)
    n = tl.program_id(1)
    g = tl.program_id(2)
    p_begin = s * pix_per_prog
    p_end = tl.minimum(p_begin + pix_per_prog, HW)
    c_begin = g * c_per_prog
    c_end = tl.minimum(c_begin + c_per_prog, C)
    # this program's table: sums[n] (atomics) or its private partial table (deterministic)
    table = sums_ptr + n.to(tl.int64) * sample_stride + s.to(tl.int64) * slot_stride
    lab_base = lab_ptr + n.to(tl.int64) * Hl * Wl
    for p0 in range(p_begin, p_end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pm = p < p_end
        lab = tile_labels(lab_base, p // W, p % W, H, W, Hl, Wl, scale_h, scale_w, L, pm)
        if g == 0:
            count_by_label(cnt_ptr + n.to(tl.int64) * L, lab)
        for c0 in range(c_begin, c_end, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            cm = c < c_end
            rows = (n * C + c).to(tl.int64) * HW
            v = tl.load(x_ptr + rows[:, None] + p[None, :], mask=cm[:, None] & pm[None, :], other=0)
            scatter_add_by_label(table + c, C, upcast(v, F64), lab, cm, DETERMINISTIC)
        if DETERMINISTIC:
            tl.debug_barrier()  # this block's read-modify-writes before the next block's


@triton.jit
def _region_broadcast_kernel(
    codes_ptr, lab_ptr, out_ptr,
    C, H, W, HW, Hl, Wl, scale_h, scale_w, L,
    pix_per_prog, c_per_prog,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    s = tl.program_id(0)
    n = tl.program_id(1)
    g = tl.program_id(2)
    p_begin = s * pix_per_prog
    p_end = tl.minimum(p_begin + pix_per_prog, HW)
    c_begin = g * c_per_prog
    c_end = tl.minimum(c_begin + c_per_prog, C)
    table = codes_ptr + n.to(tl.int64) * L * C
    lab_base = lab_ptr + n.to(tl.int64) * Hl * Wl
    for p0 in range(p_begin, p_end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pm = p < p_end
        lab = tile_labels(lab_base, p // W, p % W, H, W, Hl, Wl, scale_h, scale_w, L, pm)
        for c0 in range(c_begin, c_end, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            cm = c < c_end
            v = gather_by_label(table + c, C, lab, cm)
            rows = (n * C + c).to(tl.int64) * HW
            tl.store(out_ptr + rows[:, None] + p[None, :], v, mask=cm[:, None] & pm[None, :])


def region_pool(x: torch.Tensor, labels: torch.Tensor, num_classes: int, mean: bool) -> tuple[torch.Tensor, torch.Tensor]:
    op = "region_pool"
    check_activation(x, op)
    n, c, h, w = x.shape
    labels = check_labels(labels, n, num_classes, x.device, op)
    xc = x.contiguous()
    L = num_classes
    acc = opmath(x.dtype)
    det = deterministic()
    tiles = plan_tiles(n, c, h * w, x.device, partial_elems=L * c if det else 0)
    counts = torch.zeros(n, L, dtype=torch.int64, device=x.device)
    if det:
        partial = torch.zeros(n, tiles.s, L, c, dtype=acc, device=x.device)
        sample_stride, slot_stride = tiles.s * L * c, L * c
    else:
        partial = torch.zeros(n, 1, L, c, dtype=acc, device=x.device)
        sample_stride, slot_stride = L * c, 0
    _region_pool_kernel[tiles.grid(n)](
        xc, labels, partial, counts,
        c, h, w, h * w, labels.shape[1], labels.shape[2], nearest_scale(labels.shape[1], h), nearest_scale(labels.shape[2], w), L,
        tiles.pix_per_prog, tiles.c_per_prog, slot_stride, sample_stride,
        BLOCK_P=tiles.block_p, BLOCK_C=tiles.block_c, DETERMINISTIC=det, F64=acc == torch.float64,
    )
    sums = partial.sum(1) if partial.shape[1] > 1 else partial[:, 0]
    if mean:
        sums = sums / counts.clamp(min=1).unsqueeze(-1).to(acc)
    return sums.to(x.dtype), counts


def region_broadcast(codes: torch.Tensor, labels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    op = "region_broadcast"
    if not codes.is_floating_point():
        fail(op, f"codes must be a floating point tensor, got {codes.dtype}", TypeError)
    if codes.dim() != 3:
        fail(op, f"codes must have 3 dimensions, got shape {tuple(codes.shape)}")
    if codes.numel() == 0:
        fail(op, f"codes must not be empty, got shape {tuple(codes.shape)}")
    h, w = int(height), int(width)
    if h <= 0 or w <= 0:
        fail(op, f"height and width must be positive, got {h} x {w}")
    n, L, c = codes.shape
    labels = check_labels(labels, n, L, codes.device, op)
    cc = codes.contiguous()
    out = torch.empty(n, c, h, w, dtype=codes.dtype, device=codes.device)
    tiles = plan_tiles(n, c, h * w, codes.device)
    _region_broadcast_kernel[tiles.grid(n)](
        cc, labels, out,
        c, h, w, h * w, labels.shape[1], labels.shape[2], nearest_scale(labels.shape[1], h), nearest_scale(labels.shape[2], w), L,
        tiles.pix_per_prog, tiles.c_per_prog,
        BLOCK_P=tiles.block_p, BLOCK_C=tiles.block_c,
    )
    return out


register_kernel("region_pool", region_pool)
register_kernel("region_broadcast", region_broadcast)
