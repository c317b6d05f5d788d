"""Triton kernels of CLADE-ICPE's intra-class positional map (``intra_class_positional``).

Mirrors ``csrc/cpu/positional_kernel.cpp``: 8-connected components of every class (pixels with equal
labels; ``ignore_label`` pixels belong to none), then per component the centroid and the largest
absolute offset per axis, and ``D = offset / (max |offset| + eps)`` (0 for ignored pixels and for an
axis whose denominator is 0). Same checks and messages as the C++ kernel.

Connected components by hooking + pointer jumping on a (N * H * W) array ``comp`` of global pixel
indices, invariant: ``comp[p] <= p`` and ``comp[p]`` is a pixel of p's component (-1: ignored).

- ``_cc_init_kernel``: ``comp[p] = p`` (-1 for ignored pixels).
- ``_cc_hook_kernel``: for each pixel and each of its 4 "forward" 8-neighbours (E, SW, S, SE: every
  8-adjacency once) with the same label, if their ids a, b differ, ``atomic_min(comp[max(a, b)],
  min(a, b))`` (an integer atomic: the result does not depend on the order) and raise a flag.
- ``_cc_compress_kernel``: pointer jumping, every pixel follows ``comp`` until it reaches a root
  (``comp[r] == r``), storing as it goes (pointer doubling within a block, and later blocks find
  earlier ones already flattened).
The host loops hook -> (flag?) -> compress until a hook pass finds no differing neighbours: one
flag read (device sync) per pass. Every pass hooks each root that touches a smaller tree, so the
number of trees in a component falls geometrically (about log2 of the pixel count in passes on
snakes and spirals, not their length: tests check the pass count), and compression is pointer
jumping, not propagation.

Then ``_cc_stats_kernel`` accumulates per root the pixel count, row / column sums (int64), and the
row / column extremes (int32 min / max) with integer atomics (deterministic: integer sums and
extremes do not depend on the order). Each block first folds the pixels of its smallest and of its
largest root id (often the whole block) into one atomic per statistic, so large components do not
serialise on one address; the remaining pixels use one atomic each. Finally ``_cc_map_kernel`` computes D per pixel in
float64 like the CPU: centroid = sum / count, max |offset| = max(max - centroid, centroid - min)
(exactly the CPU's running max of |h - centroid|), ``D = (h - centroid) * (1 / (max + eps))``.
"""

import torch
import triton
import triton.language as tl

from .._extension import TRITON_INTERPRET
from ._common import LABEL_DTYPES, fail, register_kernel
from .stats import as_acc, check_defined, check_dim, check_nonempty

_BLOCK = 1024
_OP = "intra_class_positional"


def _warps() -> int:
    return 1 if TRITON_INTERPRET else 4


@triton.jit
def _pixel(pid, total, HW, W, BLOCK: tl.constexpr):
    g = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    p = g % HW
    return g, g < total, p // W, p % W


@triton.jit
def _cc_init_kernel(lab_ptr, comp_ptr, total, HW, W, ignore, BLOCK: tl.constexpr):
    g, m, _h, _w = _pixel(tl.program_id(0), total, HW, W, BLOCK)
    lab = tl.load(lab_ptr + g, mask=m, other=0).to(tl.int64)
    ids = tl.where(lab == ignore, -1, g)
    tl.store(comp_ptr + g, ids.to(comp_ptr.dtype.element_ty), mask=m)


@triton.jit
def _cc_hook_edge(lab_ptr, comp_ptr, g, h, w, valid, lab, a, H, W, DH: tl.constexpr, DW: tl.constexpr):
    """Hook the trees of pixel g and its neighbour (h + DH, w + DW) when they share a label."""
    ok = valid & (h + DH < H) & (w + DW >= 0) & (w + DW < W)
    q = g + DH * W + DW
    lq = tl.load(lab_ptr + q, mask=ok, other=0).to(tl.int64)
    ok = ok & (lq == lab)
    b = tl.load(comp_ptr + q, mask=ok, other=0)
    diff = ok & (a != b)
    hi = tl.maximum(a, b)
    lo = tl.minimum(a, b)
    tl.atomic_min(comp_ptr + tl.where(diff, hi, 0), lo, mask=diff)
    return diff.to(tl.int32)


@triton.jit
def _cc_hook_kernel(lab_ptr, comp_ptr, flag_ptr, total, HW, H, W, BLOCK: tl.constexpr):
    g, m, h, w = _pixel(tl.program_id(0), total, HW, W, BLOCK)
    a = tl.load(comp_ptr + g, mask=m, other=-1)
    valid = a >= 0  # in range and not ignored (a neighbour with the same label is not ignored either)
    lab = tl.load(lab_ptr + g, mask=valid, other=0).to(tl.int64)
    changed = _cc_hook_edge(lab_ptr, comp_ptr, g, h, w, valid, lab, a, H, W, 0, 1)
    changed |= _cc_hook_edge(lab_ptr, comp_ptr, g, h, w, valid, lab, a, H, W, 1, -1)
    changed |= _cc_hook_edge(lab_ptr, comp_ptr, g, h, w, valid, lab, a, H, W, 1, 0)
    changed |= _cc_hook_edge(lab_ptr, comp_ptr, g, h, w, valid, lab, a, H, W, 1, 1)
    any_changed = tl.max(changed, axis=0)
    tl.atomic_max(flag_ptr, any_changed, mask=any_changed > 0)


@triton.jit
def _cc_compress_kernel(comp_ptr, total, BLOCK: tl.constexpr):
    g = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    c = tl.load(comp_ptr + g, mask=g < total, other=-1)
    valid = c >= 0
    nxt = tl.where(valid, tl.load(comp_ptr + tl.where(valid, c, 0), mask=valid, other=0), c)
    todo = tl.max((nxt != c).to(tl.int32), axis=0) > 0
    while todo:
        c = nxt
        tl.store(comp_ptr + g, c, mask=valid)
        nxt = tl.where(valid, tl.load(comp_ptr + tl.where(valid, c, 0), mask=valid, other=0), c)
        todo = tl.max((nxt != c).to(tl.int32), axis=0) > 0


@triton.jit
def _cc_fold(root, sel, h, w, count_ptr, srow_ptr, scol_ptr, rmin_ptr, rmax_ptr, cmin_ptr, cmax_ptr):
    """One atomic per statistic for the pixels ``sel`` of the block that all belong to ``root``."""
    cnt = tl.sum(sel.to(tl.int32), axis=0)
    do = cnt > 0
    r = tl.where(do, root, 0)
    big = 2147483647
    tl.atomic_add(count_ptr + r, cnt.to(tl.int64), mask=do)
    tl.atomic_add(srow_ptr + r, tl.sum(tl.where(sel, h, 0).to(tl.int64), axis=0), mask=do)
    tl.atomic_add(scol_ptr + r, tl.sum(tl.where(sel, w, 0).to(tl.int64), axis=0), mask=do)
    tl.atomic_min(rmin_ptr + r, tl.min(tl.where(sel, h, big), axis=0).to(tl.int32), mask=do)
    tl.atomic_max(rmax_ptr + r, tl.max(tl.where(sel, h, -1), axis=0).to(tl.int32), mask=do)
    tl.atomic_min(cmin_ptr + r, tl.min(tl.where(sel, w, big), axis=0).to(tl.int32), mask=do)
    tl.atomic_max(cmax_ptr + r, tl.max(tl.where(sel, w, -1), axis=0).to(tl.int32), mask=do)


@triton.jit
def _cc_stats_kernel(
    comp_ptr, count_ptr, srow_ptr, scol_ptr, rmin_ptr, rmax_ptr, cmin_ptr, cmax_ptr, total, HW, W,
    BLOCK: tl.constexpr,
):
    g, m, h, w = _pixel(tl.program_id(0), total, HW, W, BLOCK)
    r = tl.load(comp_ptr + g, mask=m, other=-1).to(tl.int64)
    valid = r >= 0
    lo = tl.min(tl.where(valid, r, total), axis=0)
    hi = tl.max(r, axis=0)
    sel_lo = valid & (r == lo)
    sel_hi = valid & (r == hi) & (hi != lo)
    _cc_fold(lo, sel_lo, h, w, count_ptr, srow_ptr, scol_ptr, rmin_ptr, rmax_ptr, cmin_ptr, cmax_ptr)
    _cc_fold(hi, sel_hi, h, w, count_ptr, srow_ptr, scol_ptr, rmin_ptr, rmax_ptr, cmin_ptr, cmax_ptr)
    rest = valid & (r != lo) & (r != hi)
    ri = tl.where(rest, r, 0)
    tl.atomic_add(count_ptr + ri, tl.full([BLOCK], 1, tl.int64), mask=rest)
    tl.atomic_add(srow_ptr + ri, h.to(tl.int64), mask=rest)
    tl.atomic_add(scol_ptr + ri, w.to(tl.int64), mask=rest)
    tl.atomic_min(rmin_ptr + ri, h.to(tl.int32), mask=rest)
    tl.atomic_max(rmax_ptr + ri, h.to(tl.int32), mask=rest)
    tl.atomic_min(cmin_ptr + ri, w.to(tl.int32), mask=rest)
    tl.atomic_max(cmax_ptr + ri, w.to(tl.int32), mask=rest)


@triton.jit
def _cc_axis(coord, r, valid, sum_ptr, min_ptr, max_ptr, cnt, eps):
    """(coord - centroid) / (max |coord - centroid| + eps) in float64 -> float32, as the CPU computes it."""
    cen = tl.load(sum_ptr + r, mask=valid, other=0).to(tl.float64) / cnt
    lo = tl.load(min_ptr + r, mask=valid, other=0).to(tl.float64)
    hi = tl.load(max_ptr + r, mask=valid, other=0).to(tl.float64)
    den = tl.maximum(hi - cen, cen - lo) + eps
    inv = tl.where(den > 0, 1.0 / tl.where(den > 0, den, 1.0), 0.0)
    d = (coord.to(tl.float64) - cen) * inv
    return tl.where(valid, d.to(tl.float32), 0.0)


@triton.jit
def _cc_map_kernel(
    comp_ptr, count_ptr, srow_ptr, scol_ptr, rmin_ptr, rmax_ptr, cmin_ptr, cmax_ptr, out_ptr, total, HW, W,
    eps: "fp64", BLOCK: tl.constexpr,  # noqa: F821
):
    g, m, h, w = _pixel(tl.program_id(0), total, HW, W, BLOCK)
    r = tl.load(comp_ptr + g, mask=m, other=-1).to(tl.int64)
    valid = r >= 0
    r = tl.where(valid, r, 0)
    e = as_acc(eps, tl.float64)
    cnt = tl.load(count_ptr + r, mask=valid, other=1).to(tl.float64)
    d_row = _cc_axis(h, r, valid, srow_ptr, rmin_ptr, rmax_ptr, cnt, e)
    d_col = _cc_axis(w, r, valid, scol_ptr, cmin_ptr, cmax_ptr, cnt, e)
    base = (g // HW) * 2 * HW + g % HW
    tl.store(out_ptr + base, d_row, mask=m)
    tl.store(out_ptr + base + HW, d_col, mask=m)


def _check(labels, eps):
    check_defined(labels, _OP, "labels")
    check_dim(labels, 3, _OP, "labels")
    check_nonempty(labels, _OP, "labels")
    if not (eps >= 0.0 and eps != float("inf")):  # also refuses nan
        fail(_OP, f"eps must be finite and non-negative, got {eps}")
    n, h, w = labels.shape
    if h * w > 2**31 - 1:
        fail(_OP, f"labels must have fewer than 2^31 pixels per image, got {h} x {w}")
    if labels.dtype not in LABEL_DTYPES:
        fail(_OP, f"labels must be an integer tensor (uint8, int32 or int64), got {labels.dtype}", TypeError)
    lab = labels.contiguous()
    if lab.dtype != torch.uint8 and int(lab.min()) < 0:  # one device sync; the error path costs more
        flat = int(torch.nonzero(lab.reshape(-1) < 0)[0, 0])
        fail(_OP, f"labels must be non-negative, found {int(lab.reshape(-1)[flat])} at flat index {flat}")
    return lab


def connected_components(lab: torch.Tensor, ignore_label: int) -> tuple[torch.Tensor, int]:
    """Root ids (N, H, W) of the 8-connected same-label components (-1 where ignored), and the pass count."""
    n, h, w = lab.shape
    total, hw = lab.numel(), h * w
    idx_dtype = torch.int32 if total < 2**31 else torch.int64
    comp = torch.empty((n, h, w), dtype=idx_dtype, device=lab.device)
    flag = torch.zeros(1, dtype=torch.int32, device=lab.device)
    grid = (triton.cdiv(total, _BLOCK),)
    _cc_init_kernel[grid](lab, comp, total, hw, w, int(ignore_label), BLOCK=_BLOCK, num_warps=_warps())
    passes = 0
    while True:
        passes += 1
        flag.zero_()
        _cc_hook_kernel[grid](lab, comp, flag, total, hw, h, w, BLOCK=_BLOCK, num_warps=_warps())
        if int(flag) == 0:  # the one device sync of a pass
            return comp, passes
        _cc_compress_kernel[grid](comp, total, BLOCK=_BLOCK, num_warps=_warps())


def intra_class_positional(labels, ignore_label=-1, eps=1e-5):
    eps = float(eps)
    lab = _check(labels, eps)
    n, h, w = lab.shape
    total, hw = lab.numel(), h * w
    comp, _ = connected_components(lab, ignore_label)
    dev = lab.device
    count = torch.zeros(total, dtype=torch.int64, device=dev)
    srow = torch.zeros(total, dtype=torch.int64, device=dev)
    scol = torch.zeros(total, dtype=torch.int64, device=dev)
    big = torch.iinfo(torch.int32).max
    rmin = torch.full((total,), big, dtype=torch.int32, device=dev)
    cmin = torch.full((total,), big, dtype=torch.int32, device=dev)
    rmax = torch.full((total,), -1, dtype=torch.int32, device=dev)
    cmax = torch.full((total,), -1, dtype=torch.int32, device=dev)
    grid = (triton.cdiv(total, _BLOCK),)
    tables = (count, srow, scol, rmin, rmax, cmin, cmax)
    _cc_stats_kernel[grid](comp, *tables, total, hw, w, BLOCK=_BLOCK, num_warps=_warps())
    out = torch.empty((n, 2, h, w), dtype=torch.float32, device=dev)
    _cc_map_kernel[grid](comp, *tables, out, total, hw, w, eps, BLOCK=_BLOCK, num_warps=_warps())
    return out


register_kernel("intra_class_positional", intra_class_positional)
