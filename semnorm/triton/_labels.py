"""Label-indexed gather / segmented scatter machinery shared by the region, class_modulate and
label_conv Triton kernels.

Every kernel of these families works on tiles of one sample ``n``: ``BLOCK_P`` consecutive pixels
(row-major over the output (H, W), so loads along the pixel axis are contiguous and vectorize)
times ``BLOCK_C`` channels. The launch grid is ``(S, N, CG)``: program ``(s, n, g)`` walks the pixel
blocks of its pixel range (outer loop; the labels of a block are sampled once) and the channel
chunks of its channel group (inner loop). :func:`plan_tiles` picks the sizes.

Labels are sampled inside the kernels (:func:`tile_labels`: PyTorch's nearest rule, bit exact, from
the (N, Hl, Wl) label map in its own dtype); a label outside [0, L), a masked-off pixel or a tap
outside the image reads as -1 and never addresses a table.

Scatter-adds into per-label tables (:func:`scatter_add_by_label`) walk the distinct labels of the
tile in increasing order (a ``tl.min`` over the labels still ahead), reduce the tile's values of
that label in registers and add one row of sums per label. So a tile costs one table update per
(distinct label, channel) -- a few on natural masks, at most min(L, BLOCK_P) on random ones -- and
never builds a one-hot. Two ways to add:

- fast path: ``tl.atomic_add`` (relaxed) into the shared table. Float atomics from many programs
  land in an unspecified order, so sums may differ in the last bits from run to run.
- deterministic path (``torch.are_deterministic_algorithms_enabled()``): each program owns a
  private slice of a partial-table buffer (selected by the launcher's ``slot`` stride) and does a
  plain load-add-store into it, in the fixed label order; the launcher then sums the partial tables
  with a torch reduction over the slot dimension (fixed order, no atomics). A ``tl.debug_barrier``
  after each pixel block orders one block's read-modify-writes before the next block's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

_BIG = tl.constexpr(2**31 - 1)  # "no label": larger than any table index


def deterministic() -> bool:
    """Use the deterministic (atomic-free) reductions?"""
    return torch.are_deterministic_algorithms_enabled()


def opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@dataclass(frozen=True)
class Tiles:
    block_p: int  # pixels per tile (power of 2)
    block_c: int  # channels per tile (power of 2)
    pix_per_prog: int  # pixels per program (multiple of block_p)
    c_per_prog: int  # channels per program (multiple of block_c)
    s: int  # programs along the pixels
    cg: int  # programs along the channels

    def grid(self, n: int) -> tuple[int, int, int]:
        return (self.s, n, self.cg)


# Under the interpreter: (BLOCK_P cap, BLOCK_C cap, tile cap) and the program count aimed at. Its cost
# is per operation rather than per element, so big tiles; tests shrink them to cover the loops.
INTERPRETER_TILES = (1024, 16, 8192)
INTERPRETER_PROGRAMS = 2

# Partial tables of the deterministic path are kept under this many elements in all.
_PARTIAL_BUDGET = 1 << 24


def plan_tiles(n: int, c: int, hw: int, device: torch.device, partial_elems: int = 0) -> Tiles:
    """Tile sizes and the program split for an (N, C, HW) problem.

    On the GPU: 512-pixel tiles (4 warps, 4 consecutive pixels per thread), BLOCK_C filling a tile
    of 4096 values, and about 8 programs per SM: channel chunks are merged into one program first
    (its labels are then sampled once for many channels), then pixel blocks. Under the interpreter
    (whose cost is per operation) big tiles and few programs. ``partial_elems`` (the size of one
    program's partial table, deterministic path only) caps the number of pixel ranges so that the
    N * S partial tables stay under a budget.
    """
    if hw >= 2**31:  # pixel indices within a sample are int32 in the kernels
        raise ValueError(f"semnorm: the Triton kernels need H * W < 2^31 per sample, got {hw}")
    interp = device.type != "cuda"
    bp_cap, bc_cap, tile_cap = INTERPRETER_TILES if interp else (512, 16, 4096)
    block_p = min(bp_cap, triton.next_power_of_2(hw))
    block_c = min(bc_cap, triton.next_power_of_2(c), max(1, tile_cap // block_p))
    chunks_c, blocks_p = triton.cdiv(c, block_c), triton.cdiv(hw, block_p)
    target = INTERPRETER_PROGRAMS if interp else 8 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    cpp = 1
    while n * blocks_p * triton.cdiv(chunks_c, cpp) > target and cpp < chunks_c:
        cpp *= 2
    ppp = 1
    while n * triton.cdiv(blocks_p, ppp) * triton.cdiv(chunks_c, cpp) > target and ppp < blocks_p:
        ppp *= 2
    if partial_elems:
        while n * triton.cdiv(blocks_p, ppp) * partial_elems > _PARTIAL_BUDGET and ppp < blocks_p:
            ppp *= 2
    cpp = min(cpp, chunks_c)
    ppp = min(ppp, blocks_p)
    return Tiles(block_p, block_c, ppp * block_p, cpp * block_c, triton.cdiv(blocks_p, ppp), triton.cdiv(chunks_c, cpp))


# ----------------------------------------------------------------------------------------------
# jit helpers


@triton.jit
def upcast(v, F64: tl.constexpr):
    """To the opmath type: float64 for float64 data, else float32 (bf16 math is wrong in the interpreter)."""
    if F64:
        return v.to(tl.float64)
    else:
        return v.to(tl.float32)


@triton.jit
def tile_labels(lab_base, h, w, H, W, Hl, Wl, scale_h, scale_w, L, mask):
    """Labels at output pixels (h, w) (int32 tensors) of one sample, sampled with the nearest rule
    from its (Hl, Wl) label map at ``lab_base``; -1 where ``mask`` is false, (h, w) lies outside the
    (H, W) image (taps of the label convolution) or the stored label is outside [0, L)."""
    inside = mask & (h >= 0) & (h < H) & (w >= 0) & (w < W)
    # _common.nearest_source inlined (a nested jit call costs ~1 ms in the interpreter); negative
    # h / w only occur outside the image, where the load is masked off
    sh = tl.minimum((h.to(tl.float32) * scale_h).to(tl.int32), Hl - 1)
    sw = tl.minimum((w.to(tl.float32) * scale_w).to(tl.int32), Wl - 1)
    raw = tl.load(lab_base + (sh * Wl + sw), mask=inside, other=0)
    ok = inside & (raw >= 0) & (raw < L)  # range test in the label's own dtype (no int64 truncation)
    return tl.where(ok, raw.to(tl.int32), -1)


@triton.jit
def gather_by_label(row_ptrs, stride_l, lab, row_mask):
    """``table[row, lab[p]]`` as a (rows, pixels) tile; rows are ``row_ptrs`` (pointers to label 0),
    label l at ``l * stride_l``; 0 where the label is -1 or the row is masked."""
    safe = tl.maximum(lab, 0).to(tl.int64)
    m = row_mask[:, None] & (lab >= 0)[None, :]
    return tl.load(row_ptrs[:, None] + safe[None, :] * stride_l, mask=m, other=0)


@triton.jit
def scatter_add_by_label(row_ptrs, stride_l, vals, lab, row_mask, DETERMINISTIC: tl.constexpr):
    """``table[row, lab[p]] += vals[row, p]`` summed over the tile's pixels (labels -1 skipped).

    One row of sums per distinct label of the tile, labels in increasing order. ``DETERMINISTIC``:
    plain load-add-store (the caller's program must own the rows); else relaxed atomics.
    """
    cur = tl.min(tl.where(lab >= 0, lab, _BIG), axis=0)
    while cur < _BIG:
        part = tl.sum(tl.where((lab == cur)[None, :], vals, 0), axis=1)
        dst = row_ptrs + cur.to(tl.int64) * stride_l
        if DETERMINISTIC:
            old = tl.load(dst, mask=row_mask, other=0)
            tl.store(dst, old + part, mask=row_mask)
        else:
            tl.atomic_add(dst, part, mask=row_mask, sem="relaxed")
        cur = tl.min(tl.where(lab > cur, lab, _BIG), axis=0)


@triton.jit
def count_by_label(cnt_ptr, lab):
    """``cnt[lab[p]] += 1`` over the tile (int64 atomics: exact, hence deterministic in any order)."""
    cur = tl.min(tl.where(lab >= 0, lab, _BIG), axis=0)
    while cur < _BIG:
        k = tl.sum((lab == cur).to(tl.int64), axis=0)
        tl.atomic_add(cnt_ptr + cur.to(tl.int64), k, sem="relaxed")
        cur = tl.min(tl.where(lab > cur, lab, _BIG), axis=0)


@triton.jit
def scatter_add2_by_label(rows_a, rows_b, stride_l, vals_a, vals_b, lab, row_mask, DETERMINISTIC: tl.constexpr):
    """Two tables updated in one walk over the tile's labels (e.g. the gamma and beta banks)."""
    cur = tl.min(tl.where(lab >= 0, lab, _BIG), axis=0)
    while cur < _BIG:
        sel = (lab == cur)[None, :]
        part_a = tl.sum(tl.where(sel, vals_a, 0), axis=1)
        part_b = tl.sum(tl.where(sel, vals_b, 0), axis=1)
        off = cur.to(tl.int64) * stride_l
        if DETERMINISTIC:
            old_a = tl.load(rows_a + off, mask=row_mask, other=0)
            old_b = tl.load(rows_b + off, mask=row_mask, other=0)
            tl.store(rows_a + off, old_a + part_a, mask=row_mask)
            tl.store(rows_b + off, old_b + part_b, mask=row_mask)
        else:
            tl.atomic_add(rows_a + off, part_a, mask=row_mask, sem="relaxed")
            tl.atomic_add(rows_b + off, part_b, mask=row_mask, sem="relaxed")
        cur = tl.min(tl.where(lab > cur, lab, _BIG), axis=0)


def split_float(value: float) -> tuple[float, float]:
    """``value`` as hi + lo, two float32 kernel arguments (Triton passes Python floats as float32);
    a float64 kernel adds them back in float64 (about 48 significant bits)."""
    hi = float(torch.tensor(value, dtype=torch.float32))
    lo = float(torch.tensor(value - hi, dtype=torch.float32))
    return hi, lo


@triton.jit
def join_float(hi, lo, F64: tl.constexpr):
    if F64:
        return tl.cast(hi, tl.float64) + tl.cast(lo, tl.float64)
    else:
        return tl.cast(hi, tl.float32)
