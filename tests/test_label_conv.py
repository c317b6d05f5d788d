"""label_tap_gather / label_conv / region_conv: kernels (native, Triton; CPU, CUDA) vs reference vs explicit convolutions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as tnf
from hypothesis import given, settings
from hypothesis import strategies as st
from optest import (
    DEVICES, DTYPES, KERNEL_IMPLS, LABEL_CASES, LABEL_DTYPES, LAYOUTS, RESOLUTIONS, assert_close, make_x, needs_ext,
    needs_triton,
)

from semnorm import functional as F
from semnorm import reference
from semnorm._extension import op_namespace

KS = [1, 3, 5]


def sampled(labels, h, w):
    return tnf.interpolate(labels[:, None].double(), size=(h, w), mode="nearest")[:, 0].long()


def onehot(labels, num_classes, h, w, dtype=torch.float64):
    return tnf.one_hot(sampled(labels, h, w), num_classes).permute(0, 3, 1, 2).to(dtype)


def conv_of_table(table, labels, k, h, w):
    """The oracle: explicit one-hot map convolved with the table seen as a (Cout, L, k, k) weight."""
    t_count, c, _, num_classes = table.shape
    weight = table.double().reshape(t_count, c, k, k, num_classes).permute(0, 1, 4, 2, 3)
    oh = onehot(labels, num_classes, h, w)
    outs = [tnf.conv2d(oh[i : i + 1], weight[0 if t_count == 1 else i], padding=k // 2) for i in range(oh.shape[0])]
    return torch.cat(outs)


def naive_tap_gather(table, labels, k, h, w):
    """Pixel loop straight from the definition (small shapes only)."""
    lab = sampled(labels, h, w)
    n, r = lab.shape[0], k // 2
    out = torch.zeros(n, table.shape[1], h, w, dtype=torch.float64)
    for i in range(n):
        tab = table[0 if table.shape[0] == 1 else i].double()
        for y in range(h):
            for x in range(w):
                for ty in range(k):
                    for tx in range(k):
                        yy, xx = y + ty - r, x + tx - r
                        if 0 <= yy < h and 0 <= xx < w:
                            out[i, :, y, x] += tab[:, ty * k + tx, lab[i, yy, xx]]
    return out


def make_table(t_count, c, k, num_classes, dtype=torch.float32, layout="contiguous", requires_grad=False):
    return make_x((t_count, c, k * k, num_classes), dtype, layout, requires_grad)


@pytest.mark.parametrize("k", KS)
def test_reference_matches_naive_loop(k):
    labels = LABEL_CASES["natural"](2, 10, 6, 4)
    for t_count in (1, 2):
        table = torch.randn(t_count, 3, k * k, 4, dtype=torch.float64)
        out = reference.label_tap_gather(table, labels, k, 5, 7)
        torch.testing.assert_close(out, naive_tap_gather(table, labels, k, 5, 7))


@pytest.mark.parametrize("case", list(LABEL_CASES))
@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("k", KS)
def test_reference_matches_conv2d(case, res, k):
    (h, w), (hl, wl) = res
    labels = LABEL_CASES[case](2, hl, wl, 5)
    for t_count in (1, 2):
        table = torch.randn(t_count, 3, k * k, 5, dtype=torch.float64)
        torch.testing.assert_close(reference.label_tap_gather(table, labels, k, h, w), conv_of_table(table, labels, k, h, w))


def _id(v):
    if isinstance(v, torch.dtype):
        return str(v).split(".")[-1]
    if isinstance(v, tuple):
        return "x".join(map(_id, v))
    return str(v)


def backend_params(cases, interp_cases=None):
    """``(impl, device, *case)`` params over KERNEL_IMPLS x DEVICES: every case natively and on CUDA,
    only ``interp_cases`` (default: all) for Triton on the CPU, where the interpreter runs them
    at ~1 ms per operation."""
    params = []
    for ip in KERNEL_IMPLS:
        for dp in DEVICES:
            impl = ip.values[0]
            device = dp.values[0] if hasattr(dp, "values") else dp
            marks = list(ip.marks) + list(getattr(dp, "marks", ()))
            chosen = interp_cases if impl == "triton" and device == "cpu" and interp_cases is not None else cases
            for case in chosen:
                case = case if isinstance(case, tuple) else (case,)
                params.append(pytest.param(impl, device, *case, marks=marks, id="-".join(map(_id, (impl, device, *case)))))
    return params


def interpreted(impl, device):
    return impl == "triton" and device == "cpu"


def to_device(t, device):
    """``t`` on ``device`` with the same strides (a strided view stays strided) and requires_grad."""
    if t.device.type == device:
        return t
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)
    out.copy_(t.detach())
    return out.requires_grad_(t.requires_grad)


BACKENDS = backend_params([()])

# Triton on the CPU (the interpreter): a subset of each grid, with every dtype, layout, kernel size,
# table count, label case and resolution (odd, 1x1, coarser/finer labels) still present.
FB_CASES = [(d, lay, k, t) for d in DTYPES for lay in LAYOUTS for k in KS for t in (1, 3)]
FB_INTERP = [(torch.float32, "contiguous", 3, 1), (torch.float64, "channels_last", 1, 3), (torch.bfloat16, "strided", 3, 3),
             (torch.float16, "channels_last", 5, 1), (torch.float32, "strided", 1, 1), (torch.float64, "contiguous", 3, 3)]
CASE_CASES = [(case, r, k) for case in LABEL_CASES for r in RESOLUTIONS for k in KS]
CASE_INTERP = [(case, RESOLUTIONS[(i + j) % len(RESOLUTIONS)], KS[(i + j) % 2]) for i, case in enumerate(LABEL_CASES) for j in (0, 3)]


class TestLabelTapGatherKernels:
    @pytest.mark.parametrize("impl,device,dtype,layout,k,t_count", backend_params(FB_CASES, FB_INTERP))
    def test_forward_backward(self, impl, device, dtype, layout, k, t_count):
        table = to_device(make_table(t_count, 5, k, 6, dtype, layout), device).requires_grad_()
        table_r = table.detach().clone().requires_grad_()
        labels = LABEL_CASES["natural"](3, 14, 18, 6).to(device)
        out = F.label_tap_gather(table, labels, k, 7, 9, impl=impl)
        ref = F.label_tap_gather(table_r, labels, k, 7, 9, impl="reference")
        assert out.is_contiguous()
        assert_close(out, ref, dtype, scale=2)
        g = to_device(make_x(out.shape, dtype, layout), device)
        out.backward(g)
        ref.backward(g)
        assert_close(table.grad, table_r.grad, dtype, scale=4)

    @pytest.mark.parametrize("impl,device,case,res,k", backend_params(CASE_CASES, CASE_INTERP))
    def test_label_cases(self, impl, device, case, res, k):
        (h, w), (hl, wl) = res
        labels = LABEL_CASES[case](2, hl, wl, 5).to(device)
        for t_count in (1, 2):
            table = torch.randn(t_count, 3, k * k, 5, device=device, requires_grad=True)
            out = F.label_tap_gather(table, labels, k, h, w, impl=impl)
            ref = F.label_tap_gather(table, labels, k, h, w, impl="reference")
            assert_close(out, ref)
            g = torch.randn_like(out)
            (gt,) = torch.autograd.grad(out, table, g)
            (gr,) = torch.autograd.grad(ref, table, g)
            assert_close(gt, gr)

    @pytest.mark.parametrize("impl,device,label_dtype", backend_params(LABEL_DTYPES))
    def test_label_dtypes(self, impl, device, label_dtype):
        labels = LABEL_CASES["random"](2, 6, 5, 7).to(device)
        table = torch.randn(1, 3, 9, 7, device=device)
        out = F.label_tap_gather(table, labels.to(label_dtype), 3, 6, 5, impl=impl)
        assert_close(out, F.label_tap_gather(table, labels, 3, 6, 5, impl="reference"))
        g = torch.randn_like(out)
        gt = op_namespace(impl).label_tap_gather_backward(g, labels.to(label_dtype), 1, 7, 3)
        assert_close(gt, op_namespace(impl).label_tap_gather_backward(g, labels, 1, 7, 3))

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_gradcheck_float64(self, impl, device):
        fast = interpreted(impl, device)  # the interpreter: random projections, not full Jacobians
        labels = LABEL_CASES["natural"](2, 10, 8, 4).to(device)
        for t_count in (1, 2):
            table = torch.randn(t_count, 2, 9, 4, dtype=torch.float64, device=device, requires_grad=True)
            fn = lambda t: F.label_tap_gather(t, labels, 3, 5, 4, impl=impl)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (table,), fast_mode=fast)
            if not fast or t_count == 2:
                assert torch.autograd.gradgradcheck(fn, (table,), fast_mode=fast)

    def test_reference_gradcheck_float64(self):
        labels = LABEL_CASES["natural"](2, 10, 8, 4)
        table = torch.randn(2, 2, 9, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: reference.label_tap_gather(t, labels, 3, 5, 4), (table,))

    @pytest.mark.parametrize("impl,device,t_count", backend_params([1, 2]))
    def test_opcheck(self, impl, device, t_count):
        ops = op_namespace(impl)
        k = 1 if interpreted(impl, device) else 3  # the interpreter's cost grows with the taps
        labels = LABEL_CASES["natural"](2, 12, 10, 4).to(device)
        table = torch.randn(t_count, 3, k * k, 4, device=device, requires_grad=True)
        torch.library.opcheck(ops.label_tap_gather.default, (table, labels, k, 6, 5))
        grad = torch.randn(2, 3, 6, 5, device=device, requires_grad=True)
        torch.library.opcheck(ops.label_tap_gather_backward.default, (grad, labels, t_count, 4, k))

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_compile_fullgraph(self, impl, device):
        def f(labels, weight, bias, codes, weight2):
            a = torch.relu(F.label_conv(labels, weight, bias, (8, 8), impl=impl))
            return a + F.region_conv(codes, labels, weight2, None, (8, 8), impl=impl)

        labels = LABEL_CASES["natural"](2, 16, 16, 5).to(device)
        weight = torch.randn(4, 5, 3, 3, device=device, requires_grad=True)
        bias = torch.randn(4, device=device, requires_grad=True)
        codes = torch.randn(2, 5, 6, device=device, requires_grad=True)
        weight2 = torch.randn(4, 6, 3, 3, device=device, requires_grad=True)
        args = (labels, weight, bias, codes, weight2)
        out = torch.compile(f, fullgraph=True)(*args)
        ref = f(*args)
        assert_close(out, ref)
        grads = torch.autograd.grad(out.sum(), args[1:])
        grads_r = torch.autograd.grad(ref.sum(), args[1:])
        for a, b in zip(grads, grads_r):
            assert_close(a, b)

    @pytest.mark.parametrize("impl,device,t_count", backend_params([1, 3]))
    def test_deterministic_mode(self, impl, device, t_count):
        # Deterministic algorithms: bitwise equal on two runs, and equal to the fast path (atomics)
        # within tolerance.
        labels = LABEL_CASES["natural"](3, 22, 26, 7).to(device)
        g = torch.randn(3, 5, 11, 13, device=device)
        ops = op_namespace(impl)
        fast = ops.label_tap_gather_backward(g, labels, t_count, 7, 3)
        old = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            a = ops.label_tap_gather_backward(g, labels, t_count, 7, 3)
            b = ops.label_tap_gather_backward(g, labels, t_count, 7, 3)
        finally:
            torch.use_deterministic_algorithms(old)
        assert torch.equal(a, b)
        assert_close(a, fast)

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_fuzz_shapes(self, impl, device):
        fast = interpreted(impl, device)

        @settings(max_examples=6 if fast else settings().max_examples)
        @given(
            n=st.integers(1, 3), c=st.integers(1, 9), h=st.integers(1, 9), w=st.integers(1, 9),
            hl=st.integers(1, 12), wl=st.integers(1, 12), num_classes=st.integers(1, 9),
            k=st.sampled_from([1, 3, 5] if fast else [1, 3, 5, 7]), shared=st.booleans(), seed=st.integers(0, 2**16),
        )
        def check(n, c, h, w, hl, wl, num_classes, k, shared, seed):
            g = torch.Generator().manual_seed(seed)
            labels = torch.randint(0, num_classes, (n, hl, wl), generator=g).to(device)
            table = torch.randn(1 if shared else n, c, k * k, num_classes, generator=g).to(device).requires_grad_()
            out = F.label_tap_gather(table, labels, k, h, w, impl=impl)
            ref = F.label_tap_gather(table, labels, k, h, w, impl="reference")
            assert_close(out, ref)
            gout = torch.randn(out.shape, generator=g).to(device)
            assert_close(torch.autograd.grad(out, table, gout)[0], torch.autograd.grad(ref, table, gout)[0])

        check()


# Small tiles under the interpreter, so the kernels' loops run several times: several pixel blocks
# and channel chunks per program, several programs along the pixels (S) and the channels (CG), and the
# deterministic path's partial tables with read-modify-writes across blocks.
SMALL_TILES = [((16, 2, 32), 4), ((16, 2, 32), 16)]


@needs_triton
@pytest.mark.parametrize("tiles,programs,det,t_count", [(*SMALL_TILES[0], True, 1), (*SMALL_TILES[0], False, 2),
                                                        (*SMALL_TILES[1], True, 2), (*SMALL_TILES[1], False, 1)])
def test_triton_small_tiles(monkeypatch, tiles, programs, det, t_count):
    from semnorm.triton import _labels

    monkeypatch.setattr(_labels, "INTERPRETER_TILES", tiles)
    monkeypatch.setattr(_labels, "INTERPRETER_PROGRAMS", programs)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: det)
    labels = LABEL_CASES["natural"](2, 16, 10, 5)
    table = torch.randn(t_count, 3, 9, 5, requires_grad=True)
    out = F.label_tap_gather(table, labels, 3, 8, 5, impl="triton")
    ref = F.label_tap_gather(table, labels, 3, 8, 5, impl="reference")
    assert_close(out, ref)
    g = torch.randn_like(out)
    assert_close(torch.autograd.grad(out, table, g)[0], torch.autograd.grad(ref, table, g)[0])


# label_conv / region_conv against torch's conv2d of the explicit one-hot / broadcast map, computed in
# float64 from the same (rounded) inputs.
IMPLS = ["reference", pytest.param("native", marks=needs_ext)]
TRITON = pytest.param("triton", marks=needs_triton)


def conv_params(cases, triton_cases):
    """``(impl, *case)``: every case for the reference and native kernels, a few for Triton (interpreter)."""
    backends = [("reference", [], cases), ("native", [needs_ext], cases), ("triton", [needs_triton], triton_cases)]
    return [pytest.param(impl, *case, marks=marks, id="-".join(map(_id, (impl, *case))))
            for impl, marks, chosen in backends for case in chosen]


CONV_CASES = [(d, r, k) for d in DTYPES for r in RESOLUTIONS for k in KS]
CONV_TRITON = [(torch.float32, RESOLUTIONS[2], 3), (torch.bfloat16, RESOLUTIONS[4], 1), (torch.float64, RESOLUTIONS[6], 3)]


def check_label_conv(impl, dtype, labels, num_classes, k, size, scale=4):
    weight = torch.randn(4, num_classes, k, k, dtype=torch.float64).to(dtype).requires_grad_()
    bias = torch.randn(4, dtype=torch.float64).to(dtype).requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    b64 = bias.detach().double().requires_grad_()
    out = F.label_conv(labels, weight, bias, size, impl=impl)
    h, w = size if size is not None else labels.shape[1:]
    exp = tnf.conv2d(onehot(labels, num_classes, h, w), w64, b64, padding=k // 2)
    assert out.dtype == dtype and out.shape == exp.shape
    assert_close(out, exp.to(dtype), dtype, scale=scale)
    g = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    gw, gb = torch.autograd.grad(out, (weight, bias), g)
    ew, eb = torch.autograd.grad(exp, (w64, b64), g.double())
    assert_close(gw, ew.to(dtype), dtype, scale=scale * 4)
    assert_close(gb, eb.to(dtype), dtype, scale=scale * 4)


def check_region_conv(impl, dtype, labels, num_classes, k, size, scale=4):
    n = labels.shape[0]
    codes = torch.randn(n, num_classes, 3, dtype=torch.float64).to(dtype).requires_grad_()
    weight = torch.randn(4, 3, k, k, dtype=torch.float64).to(dtype).requires_grad_()
    bias = torch.randn(4, dtype=torch.float64).to(dtype).requires_grad_()
    c64, w64, b64 = (t.detach().double().requires_grad_() for t in (codes, weight, bias))
    out = F.region_conv(codes, labels, weight, bias, size, impl=impl)
    h, w = size if size is not None else labels.shape[1:]
    style = reference.region_broadcast(c64, labels, h, w)
    exp = tnf.conv2d(style, w64, b64, padding=k // 2)
    assert out.dtype == dtype and out.shape == exp.shape
    assert_close(out, exp.to(dtype), dtype, scale=scale)
    g = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad(out, (codes, weight, bias), g)
    exps = torch.autograd.grad(exp, (c64, w64, b64), g.double())
    for a, b in zip(grads, exps):
        assert_close(a, b.to(dtype), dtype, scale=scale * 4)


@pytest.mark.parametrize("impl,dtype,res,k", conv_params(CONV_CASES, CONV_TRITON))
def test_label_conv_matches_conv2d(impl, dtype, res, k):
    (h, w), (hl, wl) = res
    labels = LABEL_CASES["natural"](2, hl, wl, 6)
    check_label_conv(impl, dtype, labels, 6, k, (h, w))


@pytest.mark.parametrize("impl,dtype,res,k", conv_params(CONV_CASES, CONV_TRITON[::-1]))
def test_region_conv_matches_conv2d(impl, dtype, res, k):
    (h, w), (hl, wl) = res
    labels = LABEL_CASES["natural"](2, hl, wl, 6)
    check_region_conv(impl, dtype, labels, 6, k, (h, w))


@pytest.mark.parametrize("impl,case,k", conv_params([(c, k) for c in LABEL_CASES for k in KS], [("every_label", 3), ("one_label", 1)]))
def test_conv_label_cases(impl, case, k):
    labels = LABEL_CASES[case](3, 9, 7, 5)
    check_label_conv(impl, torch.float32, labels, 5, k, None)
    check_region_conv(impl, torch.float32, labels, 5, k, (5, 11))


@pytest.mark.parametrize("impl", IMPLS)
def test_conv_gradcheck_float64(impl):
    labels = LABEL_CASES["natural"](2, 10, 8, 4)
    weight = torch.randn(3, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b: F.label_conv(labels, w, b, (5, 4), impl=impl), (weight, bias))
    codes = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    weight2 = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda c, w, b: F.region_conv(c, labels, w, b, (5, 4), impl=impl), (codes, weight2, bias)
    )


class TestLabelConvErrors:
    @pytest.mark.parametrize("impl", ["native", TRITON, "reference"])
    def test_bad_input(self, impl):
        if impl == "native":
            pytest.importorskip("semnorm._C", reason="extension not built")
        labels = torch.zeros(2, 4, 4, dtype=torch.int64)
        table = torch.randn(1, 3, 9, 5)
        with pytest.raises(ValueError, match="kernel_size must be a positive odd integer, got 2"):
            F.label_tap_gather(torch.randn(1, 3, 4, 5), labels, 2, 4, 4, impl=impl)
        with pytest.raises(ValueError, match="table must be a non-empty"):
            F.label_tap_gather(table[0], labels, 3, 4, 4, impl=impl)
        with pytest.raises(ValueError, match="table must have kernel_size\\^2 = 1 taps"):
            F.label_tap_gather(table, labels, 1, 4, 4, impl=impl)
        with pytest.raises(ValueError, match="table must have 1 or N = 2 entries"):
            F.label_tap_gather(torch.randn(3, 3, 9, 5), labels, 3, 4, 4, impl=impl)
        with pytest.raises(TypeError, match="table must be a floating point"):
            F.label_tap_gather(table.long(), labels, 3, 4, 4, impl=impl)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 5\), found 5"):
            F.label_tap_gather(table, labels + 5, 3, 4, 4, impl=impl)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 5\), found -1"):
            F.label_tap_gather(table, labels - 1, 3, 4, 4, impl=impl)
        with pytest.raises(TypeError, match="labels must be an integer tensor"):
            F.label_tap_gather(table, labels.float(), 3, 4, 4, impl=impl)
        with pytest.raises(ValueError, match="labels must have 3 dimensions"):
            F.label_tap_gather(table, labels[0], 3, 4, 4, impl=impl)
        with pytest.raises(ValueError, match="height and width must be positive"):
            F.label_tap_gather(table, labels, 3, 0, 4, impl=impl)
        # label_conv / region_conv
        with pytest.raises(ValueError, match="kernel_size must be a positive odd integer, got 2"):
            F.label_conv(labels, torch.randn(3, 5, 2, 2), impl=impl)
        with pytest.raises(ValueError, match="weight must be a non-empty"):
            F.label_conv(labels, torch.randn(3, 5, 3, 1), impl=impl)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 5\), found 7"):
            F.label_conv(labels + 7, torch.randn(3, 5, 3, 3), impl=impl)
        with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
            F.label_conv(labels, torch.randn(3, 5, 3, 3), torch.randn(4), impl=impl)
        with pytest.raises(ValueError, match="size must be positive"):
            F.label_conv(labels, torch.randn(3, 5, 3, 3), size=(0, 3), impl=impl)
        codes = torch.randn(2, 5, 6)
        with pytest.raises(ValueError, match="weight has 4 input channels but codes' Cin is 6"):
            F.region_conv(codes, labels, torch.randn(3, 4, 3, 3), impl=impl)
        with pytest.raises(TypeError, match="weight has dtype torch.float64 but codes have torch.float32"):
            F.region_conv(codes, labels, torch.randn(3, 6, 3, 3, dtype=torch.float64), impl=impl)
        with pytest.raises(ValueError, match="labels has batch size 1"):
            F.region_conv(codes, labels[:1], torch.randn(3, 6, 3, 3), impl=impl)
        with pytest.raises(ValueError, match="codes must be a non-empty"):
            F.region_conv(codes[0], labels, torch.randn(3, 6, 3, 3), impl=impl)
        with pytest.raises(TypeError, match="labels must be an integer tensor"):
            F.region_conv(codes, labels.double(), torch.randn(3, 6, 3, 3), impl=impl)

    @pytest.mark.parametrize("impl", KERNEL_IMPLS)
    def test_kernel_checks_itself(self, impl):
        # Bypass the Python layer: the kernels must refuse bad input on their own. C++ raises
        # RuntimeError, the Triton launchers ValueError / TypeError; both IndexError for label values.
        native = impl == "native"
        value_error, type_error = (RuntimeError, RuntimeError) if native else (ValueError, TypeError)
        ops = op_namespace(impl)
        labels = torch.zeros(2, 3, 3, dtype=torch.int64)
        table = torch.randn(1, 2, 9, 4)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found 9"):
            ops.label_tap_gather(table, torch.full((2, 3, 3), 9), 3, 3, 3)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found 300"):
            ops.label_tap_gather_backward(torch.randn(2, 2, 3, 3), torch.full((2, 2, 2), 300, dtype=torch.int32), 1, 4, 3)
        with pytest.raises(type_error, match="labels must be an integer tensor"):
            ops.label_tap_gather(table, labels.float(), 3, 3, 3)
        with pytest.raises(value_error, match="kernel_size must be a positive odd integer, got 4"):
            ops.label_tap_gather(torch.randn(1, 2, 16, 4), labels, 4, 3, 3)
        with pytest.raises(value_error, match="kernel_size must be a positive odd integer, got 2"):
            ops.label_tap_gather_backward(torch.randn(2, 2, 3, 3), labels, 1, 4, 2)
        with pytest.raises(value_error, match="table must have 4 dimensions"):
            ops.label_tap_gather(table[0], labels, 3, 3, 3)
        with pytest.raises(value_error, match=r"table must have shape \(T, Cout, kernel_size\^2 = 9, L\)"):
            ops.label_tap_gather(torch.randn(1, 2, 4, 4), labels, 3, 3, 3)
        with pytest.raises(value_error, match="table must have 1 or N = 2 entries"):
            ops.label_tap_gather(torch.randn(3, 2, 9, 4), labels, 3, 3, 3)
        with pytest.raises(value_error, match="num_tables must be 1 or N = 2, got 3"):
            ops.label_tap_gather_backward(torch.randn(2, 2, 3, 3), labels, 3, 4, 3)
        with pytest.raises(value_error, match="labels has batch size 2 but the activations have 1"):
            ops.label_tap_gather_backward(torch.randn(1, 2, 3, 3), labels, 1, 4, 3)
        with pytest.raises(type_error, match="table must be a floating point"):
            ops.label_tap_gather(table.long(), labels, 3, 3, 3)
        with pytest.raises(value_error, match="height and width must be positive, got 0 x 3"):
            ops.label_tap_gather(table, labels, 3, 0, 3)
