"""intra_class_positional (CLADE-ICPE): native kernel vs reference vs scipy's connected components."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from optest import DEVICES, KERNEL_IMPLS, LABEL_DTYPES, needs_triton

import semnorm
from semnorm import functional as F
from semnorm import reference
from semnorm.testing import natural_labels

ndimage = pytest.importorskip("scipy.ndimage")

EIGHT = np.ones((3, 3), dtype=int)


def scipy_components(labels, ignore_label=-1):
    """(N, H, W) int64 component ids from scipy.ndimage.label per class (8-connectivity), -1 ignored."""
    lab = labels.long().numpy()
    out = np.full(lab.shape, -1, dtype=np.int64)
    for n in range(lab.shape[0]):
        nxt = 0
        for c in np.unique(lab[n]):
            if c == ignore_label:
                continue
            comp, k = ndimage.label(lab[n] == c, structure=EIGHT)
            out[n][comp > 0] = comp[comp > 0] - 1 + nxt
            nxt += k
    return out


def naive_positional(labels, ignore_label=-1, eps=1e-5):
    """D from scipy's components, one component at a time in float64 (the oracle)."""
    comps = scipy_components(labels, ignore_label)
    n, h, w = comps.shape
    d = np.zeros((n, 2, h, w), dtype=np.float64)
    for i in range(n):
        for k in np.unique(comps[i]):
            if k < 0:
                continue
            r, c = np.nonzero(comps[i] == k)
            dr, dc = r - r.mean(), c - c.mean()
            mr, mc = np.abs(dr).max() + eps, np.abs(dc).max() + eps
            d[i, 0, r, c] = dr / mr if mr > 0 else 0.0
            d[i, 1, r, c] = dc / mc if mc > 0 else 0.0
    return torch.from_numpy(d).float()


def same_partition(a, b):
    """True when two (N, H, W) id maps induce the same partition of the pixels (ids may differ)."""
    a, b = np.asarray(a).reshape(a.shape[0], -1), np.asarray(b).reshape(b.shape[0], -1)
    for x, y in zip(a, b):
        pairs = np.unique(np.stack([x, y]), axis=1)
        if len(np.unique(pairs[0])) != pairs.shape[1] or len(np.unique(pairs[1])) != pairs.shape[1]:
            return False
    return True


def assert_close(actual, expected):
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=1e-5, atol=1e-6, check_dtype=True)


def _checker(n, h, w):  # two labels on a checkerboard: one 8-component per colour, all 1-pixel 4-components
    return ((torch.arange(h).view(h, 1) + torch.arange(w).view(1, w)) % 2).expand(n, h, w).contiguous()


def _diagonals(n, h, w):  # anti-diagonal stripes of 3 labels: 8-connected along one diagonal only
    return ((torch.arange(h).view(h, 1) + torch.arange(w).view(1, w)) % 3).expand(n, h, w).contiguous()


def _staircase(n, h, w):  # a one-pixel staircase of label 1 on label 0, joined only by corners
    lab = torch.zeros(n, h, w, dtype=torch.int64)
    idx = torch.arange(min(h, w))
    lab[:, idx, idx] = 1
    return lab


def _spiral(n, h, w):  # long snake-like component (many propagation rounds for the reference)
    lab = torch.zeros(n, h, w, dtype=torch.int64)
    lab[:, ::2, :] = 1
    lab[:, 1::4, -1] = 1
    lab[:, 3::4, 0] = 1
    return lab


def spiral_corridor(n, size):
    """One 8-connected corridor of label 0 winding inwards between walls of label 1 (and the walls'
    own pieces): a component whose geodesic length is about size^2 / 2, the worst case of label
    propagation (a pass count proportional to its length)."""
    a = np.zeros((size, size), dtype=np.int64)
    top, left, bottom, right, side = 0, 0, size - 1, size - 1, 0
    while top <= bottom and left <= right:
        if side == 0:
            a[top, left:right + 1] = 1
            top += 2
        elif side == 1:
            a[top - 2:bottom + 1, right] = 1
            right -= 2
        elif side == 2:
            a[bottom, left:right + 3] = 1
            bottom -= 2
        else:
            a[top:bottom + 3, left] = 1
            left += 2
        side = (side + 1) % 4
    return torch.from_numpy(a).expand(n, size, size).contiguous()


def vertical_snake(n, h, w):  # the snake case turned by 90 degrees: one serpentine of label 1 down the columns
    return _spiral(n, w, h).transpose(1, 2).contiguous()


# Shapes built to need many propagation rounds; each also flipped, so the raster order runs against them.
ADVERSARIAL = {
    "spiral": lambda: spiral_corridor(1, 45),
    "spiral_flipped": lambda: spiral_corridor(1, 45).flip(1, 2).contiguous(),
    "snake": lambda: _spiral(1, 48, 33),
    "snake_flipped": lambda: _spiral(1, 48, 33).flip(2).contiguous(),
    "vertical_snake": lambda: vertical_snake(1, 33, 48),
    "vertical_snake_flipped": lambda: vertical_snake(1, 33, 48).flip(1).contiguous(),
}

LABEL_CASES = {
    "natural": lambda n, h, w: natural_labels(n, h, w, 9, classes_per_image=4),
    "random": lambda n, h, w: torch.randint(0, 3, (n, h, w)),
    "one_label": lambda n, h, w: torch.full((n, h, w), 4, dtype=torch.int64),
    "every_label": lambda n, h, w: torch.arange(n * h * w).view(n, h, w),
    "checkerboard": _checker,
    "diagonals": _diagonals,
    "staircase": _staircase,
    "snake": _spiral,
    "large_values": lambda n, h, w: torch.randint(0, 2, (n, h, w)) * (2**40) + 7,
}
SIZES = [(1, 1), (1, 7), (6, 1), (5, 3), (8, 8), (9, 13)]


@pytest.mark.parametrize("case", list(LABEL_CASES))
@pytest.mark.parametrize("size", SIZES)
def test_reference_components_match_scipy(case, size):
    labels = LABEL_CASES[case](2, *size)
    assert same_partition(reference.connected_components(labels), scipy_components(labels))


@pytest.mark.parametrize("case", list(LABEL_CASES))
@pytest.mark.parametrize("size", SIZES)
def test_reference_matches_naive(case, size):
    labels = LABEL_CASES[case](2, *size)
    assert_close(reference.intra_class_positional(labels), naive_positional(labels))


def test_eight_connectivity_matters():
    # A checkerboard is two components under 8-connectivity (D spans [-1, 1]) but all single pixels
    # under 4-connectivity (D = 0): the test cases above tell the two apart.
    labels = _checker(1, 6, 6)
    d = reference.intra_class_positional(labels)
    assert d.abs().max() > 0.99
    assert scipy_components(labels).max() == 1


def to(device, labels):
    return labels.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", KERNEL_IMPLS)
class TestPositionalKernels:
    """The kernels (impl: native C++/CUDA or Triton) against scipy's components and the reference."""

    @pytest.mark.parametrize("case", list(LABEL_CASES))
    @pytest.mark.parametrize("size", SIZES)
    def test_label_cases(self, impl, device, case, size):
        labels = LABEL_CASES[case](3, *size)
        d = F.intra_class_positional(to(device, labels), impl=impl)
        assert d.shape == (3, 2, *size) and d.dtype == torch.float32 and d.is_contiguous()
        assert d.device.type == device
        assert_close(d, naive_positional(labels))
        assert_close(d, F.intra_class_positional(labels, impl="reference"))
        assert float(d.abs().max()) <= 1.0

    @pytest.mark.parametrize("case", list(ADVERSARIAL))
    def test_adversarial_shapes(self, impl, device, case):
        labels = ADVERSARIAL[case]()
        d = F.intra_class_positional(to(device, labels), impl=impl)
        assert_close(d, naive_positional(labels))

    @pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
    @pytest.mark.parametrize("ignore_label", [None, 0, 3, 200])
    def test_dtypes_and_ignore_label(self, impl, device, label_dtype, ignore_label):
        labels = natural_labels(2, 11, 14, 6, classes_per_image=4).to(label_dtype)
        d = F.intra_class_positional(to(device, labels), ignore_label, impl=impl)
        dr = F.intra_class_positional(labels, ignore_label, impl="reference")
        oracle = naive_positional(labels, -1 if ignore_label is None else ignore_label)
        assert_close(d, oracle)
        assert_close(dr, oracle)
        if ignore_label is not None:
            assert torch.all(d.cpu()[(labels == ignore_label).unsqueeze(1).expand_as(d)] == 0)

    def test_large_ignore_label(self, impl, device):
        labels = LABEL_CASES["large_values"](2, 6, 7)
        d = F.intra_class_positional(to(device, labels), 2**40 + 7, impl=impl)
        assert_close(d, naive_positional(labels, 2**40 + 7))

    def test_strided_labels(self, impl, device):
        wide = to(device, natural_labels(2, 9, 20, 5, classes_per_image=3))
        labels = wide[:, :, ::2]
        assert not labels.is_contiguous()
        assert_close(F.intra_class_positional(labels, impl=impl), naive_positional(labels.cpu().contiguous()))

    @pytest.mark.parametrize("eps", [0.0, 1e-5, 0.5])
    def test_eps(self, impl, device, eps):
        labels = LABEL_CASES["random"](2, 7, 9)
        d = F.intra_class_positional(to(device, labels), eps=eps, impl=impl)
        assert torch.isfinite(d).all()
        assert_close(d, naive_positional(labels, eps=eps))
        assert_close(F.intra_class_positional(labels, eps=eps, impl="reference"), d)

    def test_single_pixel_components_are_zero(self, impl, device):
        labels = to(device, torch.arange(12).view(1, 3, 4))
        assert torch.equal(F.intra_class_positional(labels, impl=impl).cpu(), torch.zeros(1, 2, 3, 4))

    def test_flip_equivariance(self, impl, device):
        check_flip_equivariance(impl, device)

    def test_opcheck(self, impl, device):
        op = semnorm._extension.op_namespace(impl).intra_class_positional.default
        labels = to(device, natural_labels(2, 7, 9, 5, classes_per_image=3))
        torch.library.opcheck(op, (labels, -1, 1e-5))
        torch.library.opcheck(op, (labels.to(torch.uint8), 2, 0.0))

    def test_compile_fullgraph(self, impl, device):
        def f(labels, x):
            d = F.intra_class_positional(labels, ignore_label=0, impl=impl)
            return x * (1 + d.sum(1, keepdim=True))

        labels = to(device, natural_labels(2, 12, 10, 5, classes_per_image=3))
        x = torch.randn(2, 3, 12, 10, device=device)
        out = torch.compile(f, fullgraph=True)(labels, x)
        assert_close(out, f(labels, x))

    @given(
        n=st.integers(1, 3), h=st.integers(1, 12), w=st.integers(1, 12), num_classes=st.integers(1, 6),
        natural=st.booleans(), ignore=st.integers(-1, 3), seed=st.integers(0, 2**16),
    )
    def test_fuzz(self, impl, device, n, h, w, num_classes, natural, ignore, seed):
        g = torch.Generator().manual_seed(seed)
        if natural:
            labels = natural_labels(n, h, w, num_classes, classes_per_image=min(3, num_classes), generator=g)
        else:
            labels = torch.randint(0, num_classes, (n, h, w), generator=g)
        d = F.intra_class_positional(to(device, labels), ignore, impl=impl)
        assert_close(d, naive_positional(labels, ignore))
        assert_close(F.intra_class_positional(labels, ignore, impl="reference"), d)
        assert same_partition(reference.connected_components(labels, ignore), scipy_components(labels, ignore))


def check_flip_equivariance(impl, device="cpu"):
    # The published pipeline flips the image and the precomputed D together, which leaves the
    # column channel pointing the wrong way; computed from the flipped mask, D is right.
    labels = to(device, natural_labels(2, 16, 21, 7, classes_per_image=4))
    sign_col = torch.tensor([1.0, -1.0], device=device).view(1, 2, 1, 1)
    sign_row = torch.tensor([-1.0, 1.0], device=device).view(1, 2, 1, 1)
    d = F.intra_class_positional(labels, impl=impl)
    d_flip = F.intra_class_positional(labels.flip(-1), impl=impl)
    assert_close(d_flip, d.flip(-1) * sign_col)
    assert not torch.allclose(d_flip, d.flip(-1))  # what the published pipeline feeds the model
    # vertical flips negate the row channel
    d_vflip = F.intra_class_positional(labels.flip(-2), impl=impl)
    assert_close(d_vflip, d.flip(-2) * sign_row)


def test_reference_flip_equivariance():
    check_flip_equivariance("reference")


@needs_triton
@pytest.mark.parametrize("case", list(ADVERSARIAL) + ["natural", "random", "checkerboard", "staircase"])
def test_triton_component_passes_stay_few(case):
    # Hooking + pointer jumping: the host loop's pass count grows like log(pixels), not like the
    # geodesic length of a component (hundreds of pixels for the spiral and the snakes).
    from semnorm.triton.positional import connected_components

    labels = ADVERSARIAL[case]() if case in ADVERSARIAL else LABEL_CASES[case](2, 40, 37)
    comp, passes = connected_components(labels.contiguous(), -1)
    assert same_partition(comp.long(), scipy_components(labels))
    assert passes <= 2 + int(np.log2(labels[0].numel()))
    roots = comp.flatten()
    assert torch.equal(roots[roots.long()], roots)  # fully flattened: every pixel points at its root


class TestPositionalErrors:
    @pytest.mark.parametrize("impl", ["native", pytest.param("triton", marks=needs_triton), "reference"])
    def test_bad_input(self, impl):
        if impl == "native":
            pytest.importorskip("semnorm._C", reason="extension not built")
        good = torch.zeros(2, 4, 4, dtype=torch.int64)
        with pytest.raises(ValueError, match="labels must be non-negative, found -1"):
            F.intra_class_positional(good - 1, impl=impl)
        with pytest.raises(TypeError, match="labels must be an integer tensor"):
            F.intra_class_positional(good.float(), impl=impl)
        with pytest.raises(ValueError, match="labels must have 3 dimensions"):
            F.intra_class_positional(good[0], impl=impl)
        with pytest.raises(ValueError, match="labels must not be empty"):
            F.intra_class_positional(good[:, :0], impl=impl)
        with pytest.raises(ValueError, match="eps must be finite and non-negative"):
            F.intra_class_positional(good, eps=-1.0, impl=impl)
        with pytest.raises(TypeError, match="ignore_label must be an int"):
            F.intra_class_positional(good, ignore_label=1.5, impl=impl)
        with pytest.raises(TypeError, match="labels must be a tensor"):
            F.intra_class_positional([[0]], impl=impl)

    @pytest.mark.parametrize("impl", KERNEL_IMPLS)
    def test_kernel_checks_itself(self, impl):
        # Bypass the Python layer: the kernel must refuse bad input on its own (C++ raises
        # RuntimeError for most checks, Triton ValueError / TypeError; both ValueError for values).
        op = semnorm._extension.op_namespace(impl).intra_class_positional
        err = RuntimeError if impl == "native" else (ValueError, TypeError)
        bad = torch.zeros(2, 3, 3, dtype=torch.int32)
        bad[1, 2, 1] = -7
        bad[1, 2, 2] = -9
        with pytest.raises(ValueError, match="labels must be non-negative, found -7 at flat index 16"):
            op(bad)
        with pytest.raises(err, match="labels must be an integer tensor"):
            op(torch.zeros(1, 3, 3))
        with pytest.raises(err, match="labels must have 3 dimensions"):
            op(torch.zeros(3, 3, dtype=torch.int64))
        with pytest.raises(err, match="labels must not be empty"):
            op(torch.zeros(1, 0, 3, dtype=torch.int64))
        with pytest.raises(ValueError, match="eps must be finite and non-negative"):
            op(torch.zeros(1, 3, 3, dtype=torch.int64), -1, float("nan"))
        with pytest.raises(ValueError, match="eps must be finite and non-negative"):
            op(torch.zeros(1, 3, 3, dtype=torch.int64), -1, -0.5)
        op(torch.zeros(1, 3, 3, dtype=torch.int64))  # a good call after the bad ones works


# ---- the Triton kernels compiled for sm_90 without a GPU (see tests/test_norm.py)

AOT_POSITIONAL = """
from semnorm.triton import positional as P
for dt in (torch.int64, torch.int32, torch.uint8):
    for ignore in (-1, 1, 3, 2**40):
        P.intra_class_positional(torch.randint(0, 3, (2, 9, 13)).to(dt), ignore, 1e-5)
        P.intra_class_positional(torch.randint(0, 3, (1, 1, 1)).to(dt), ignore, 0.0)
# the flag of a compile-only launch stays 0, so the host loop never reaches the compress kernel
P._cc_compress_kernel[(1,)](torch.zeros(10, dtype=torch.int32), 10, BLOCK=1024, num_warps=4)
P._cc_compress_kernel[(1,)](torch.zeros(10, dtype=torch.int64), 10, BLOCK=1024, num_warps=4)
"""


@pytest.mark.slow
@needs_triton
def test_triton_kernels_compile_for_sm90():
    pytest.importorskip("triton.backends.nvidia")
    from test_norm import compile_triton_launches

    compile_triton_launches(AOT_POSITIONAL)
