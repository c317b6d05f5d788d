"""CUDA kernels of the label-indexed families vs the reference: region_pool / region_broadcast,
class_modulate (+ backward) and label_tap_gather (+ backward), csrc/cuda/{region,class_modulate,
label_conv}_kernel.cu with their shared machinery csrc/cuda/label_index.cuh.

Besides forward and every gradient over dtypes x layouts x label cases, the shapes here are picked
to reach every path of the kernels: vector and scalar loads (pixel counts that are / are not
multiples of 4, a misaligned int32 label map), several chunks per plane, tables staged in shared
memory and tables too large for it, the atomic (fast) and the deterministic reductions
(torch.use_deterministic_algorithms(True): bitwise identical on two runs, close to the fast path),
kernel sizes with all taps in one pass (1, 3, 5), one tap row per pass (7) and one tap per pass (9).
Every test needs a CUDA device and a build with the CUDA kernels; they skip elsewhere.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from optest import DTYPES, LABEL_CASES, LABEL_DTYPES, LAYOUTS, RESOLUTIONS, assert_close, needs_cuda

from semnorm import functional as F

pytestmark = needs_cuda

DEV = "cuda"


def opmath(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def on_device(t, layout="contiguous", requires_grad=False):
    """Moves a CPU tensor to CUDA in the given memory layout (values unchanged)."""
    t = t.to(DEV)
    if layout == "channels_last" and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # every other column of a wider tensor
        wide = torch.zeros(*t.shape[:-1], t.shape[-1] * 2, dtype=t.dtype, device=DEV)
        wide[..., ::2] = t
        t = wide[..., ::2]
        assert not t.is_contiguous()
    return t.requires_grad_(requires_grad)


def randn(shape, dtype=torch.float32, layout="contiguous", requires_grad=False):
    return on_device(torch.randn(shape, dtype=torch.float64).to(dtype), layout, requires_grad)


def labels_for(case, n, h, w, num_classes, dtype=torch.int64):
    return LABEL_CASES[case](n, h, w, num_classes).to(dtype).to(DEV)


def leaf(t):
    return t.detach().clone().requires_grad_(t.requires_grad)


@contextlib.contextmanager
def deterministic(on=True):
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)


def grads(fn, inputs, grad_out):
    """Output of fn(*inputs) and the gradients of every input that requires one (fresh leaves)."""
    leaves = [leaf(t) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs]
    out = fn(*leaves)
    need = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
    gs = torch.autograd.grad(out, need, grad_out) if need else []
    return out, list(gs)


def assert_bitwise_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b), f"max abs difference {(a.double() - b.double()).abs().max().item()}"


# ----------------------------------------------------------------------------------------------
# region_pool / region_broadcast


def pool(impl, mean):
    return lambda x, labels, num_classes: F.region_pool(x, labels, num_classes, mean, impl=impl)[0]


def check_pool(x, labels, num_classes, mean, dtype, scale=1.0, det=False):
    with deterministic(det):
        p, c = F.region_pool(x, labels, num_classes, mean, impl="native")
    pr, cr = F.region_pool(x, labels, num_classes, mean, impl="reference")
    assert p.device.type == DEV and c.dtype == torch.int64
    assert torch.equal(c, cr)
    assert_close(p, pr, dtype, scale=scale)
    g = torch.randn_like(pr)
    with deterministic(det):
        _, (gx,) = grads(pool("native", mean), (x, labels, num_classes), g)
    _, (gxr,) = grads(pool("reference", mean), (x, labels, num_classes), g)
    assert_close(gx, gxr, dtype, scale=scale)


def check_broadcast(codes, labels, h, w, dtype, scale=4.0, det=False):
    fn = lambda impl: lambda t, lab: F.region_broadcast(t, lab, h, w, impl=impl)  # noqa: E731
    g = randn((codes.shape[0], codes.shape[2], h, w), dtype)
    with deterministic(det):
        s, (gc,) = grads(fn("native"), (codes, labels), g)
    sr, (gcr,) = grads(fn("reference"), (codes, labels), g)
    assert s.is_contiguous() and s.device.type == DEV
    assert_close(s, sr, dtype)
    assert_close(gc, gcr, dtype, scale=scale)


class TestRegionCuda:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("mean", [True, False])
    def test_pool_forward_backward(self, dtype, layout, mean):
        x = randn((2, 5, 9, 7), dtype, layout, requires_grad=True)
        check_pool(x, labels_for("natural", 2, 18, 14, 6), 6, mean, dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
    @pytest.mark.parametrize("res", RESOLUTIONS)
    def test_broadcast_forward_backward(self, dtype, label_dtype, res):
        (h, w), (hl, wl) = res
        codes = randn((2, 4, 3), dtype, requires_grad=True)
        check_broadcast(codes, labels_for("random", 2, hl, wl, 4, label_dtype), h, w, dtype)

    @pytest.mark.parametrize("case", list(LABEL_CASES))
    @pytest.mark.parametrize("res", RESOLUTIONS)
    def test_label_cases(self, case, res):
        (h, w), (hl, wl) = res
        labels = labels_for(case, 3, hl, wl, 7)
        x = randn((3, 4, h, w), requires_grad=True)
        for mean in (True, False):
            check_pool(x, labels, 7, mean, torch.float32)
        check_broadcast(randn((3, 7, 4), requires_grad=True), labels, h, w, torch.float32)

    @pytest.mark.parametrize("hw", [(64, 64), (63, 65), (32, 48)])
    @pytest.mark.parametrize("case", ["natural", "random"])
    def test_several_chunks_per_plane(self, hw, case):
        # few planes of many pixels: several blocks per plane; 63 x 65 has no vector path
        h, w = hw
        x = randn((2, 3, h, w), requires_grad=True)
        labels = labels_for(case, 2, h, w, 9)
        check_pool(x, labels, 9, True, torch.float32, scale=2)
        check_broadcast(randn((2, 9, 3), requires_grad=True), labels, h, w, torch.float32)

    def test_misaligned_int32_labels(self):
        # an int32 map at x's size is used in place: a storage offset of 1 breaks the 16-byte alignment
        labels = labels_for("natural", 2, 8, 8, 5, torch.int32)
        storage = torch.empty(2 * 64 + 1, dtype=torch.int32, device=DEV)
        storage[1:] = labels.reshape(-1)
        shifted = storage[1:].view(2, 8, 8)
        assert shifted.data_ptr() % 16 != 0
        x = randn((2, 3, 8, 8), requires_grad=True)
        check_pool(x, shifted, 5, True, torch.float32)
        check_broadcast(randn((2, 5, 3), requires_grad=True), shifted, 8, 8, torch.float32)
        table = randn((1, 3, 9, 5), requires_grad=True)
        check_tap(table, shifted, 3, 8, 8, torch.float32)
        ins = cm_inputs(2, 3, 8, 8, 8, 8, 5, scales=True)
        check_cm(ins[:3] + (shifted,) + ins[4:], 1.0, torch.float32)

    @pytest.mark.parametrize("det", [False, True])
    def test_many_classes(self, det):
        # L = 20000: the pooled table does not fit in shared memory (global atomics / global rows)
        num_classes = 20000
        x = randn((2, 3, 40, 40), requires_grad=True)
        labels = torch.randint(0, num_classes, (2, 40, 40), device=DEV)
        check_pool(x, labels, num_classes, True, torch.float32, det=det)
        check_pool(x, labels, num_classes, False, torch.float32, det=det)
        check_broadcast(randn((2, num_classes, 3), requires_grad=True), labels, 40, 40, torch.float32, det=det)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("case", ["natural", "random"])
    def test_deterministic(self, dtype, case):
        x = randn((2, 6, 64, 48), dtype, requires_grad=True)
        labels = labels_for(case, 2, 64, 48, 12)
        codes = randn((2, 12, 6), dtype, requires_grad=True)
        g = randn((2, 6, 64, 48), dtype)

        def run():
            p, c = F.region_pool(x, labels, 12, True, impl="native")
            s = F.region_broadcast(codes, labels, 64, 48, impl="native")
            (gc,) = torch.autograd.grad(s, codes, g)  # a region sum
            return p, c, s, gc

        with deterministic():
            first, second = run(), run()
        fast = run()
        for a, b, f in zip(first, second, fast):
            assert_bitwise_equal(a, b)
            if a.is_floating_point():
                assert_close(a, f, a.dtype, scale=20)
            else:
                assert torch.equal(a, f)

    def test_out_of_range_label_then_recovers(self):
        x = randn((2, 3, 5, 5))
        good = labels_for("random", 2, 5, 5, 4)
        bad = good.clone()
        bad[1, 2, 3] = 4
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found 4"):
            torch.ops.semnorm.region_pool(x, bad, 4, True)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found -1"):
            torch.ops.semnorm.region_broadcast(randn((2, 4, 3)), good - 1, 5, 5)
        torch.cuda.synchronize()
        check_pool(x.requires_grad_(), good, 4, True, torch.float32)

    @pytest.mark.parametrize("mean", [True, False])
    def test_opcheck(self, mean):
        x = randn((2, 3, 6, 5), requires_grad=True)
        labels = labels_for("natural", 2, 12, 10, 4)
        torch.library.opcheck(torch.ops.semnorm.region_pool.default, (x, labels, 4, mean))
        torch.library.opcheck(torch.ops.semnorm.region_broadcast.default, (randn((2, 4, 3), requires_grad=True), labels, 6, 5))

    def test_gradcheck_float64(self):
        x = randn((2, 3, 5, 4), torch.float64, requires_grad=True)
        labels = labels_for("absent_labels", 2, 5, 4, 5)
        fn = lambda t: F.region_pool(t, labels, 5, True, impl="native")[0]  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))

    def test_compile_fullgraph(self):
        def f(x, labels):
            pooled, _ = F.region_pool(x, labels, 5, True, impl="native")
            return F.region_broadcast(pooled * 2, labels, x.shape[2], x.shape[3], impl="native")

        x = randn((2, 3, 8, 8), requires_grad=True)
        labels = labels_for("natural", 2, 16, 16, 5)
        out = torch.compile(f, fullgraph=True)(x, labels)
        ref = f(x, labels)
        assert_close(out, ref)
        (gx,) = torch.autograd.grad(out.sum(), x)
        (gr,) = torch.autograd.grad(ref.sum(), x)
        assert_close(gx, gr)


# ----------------------------------------------------------------------------------------------
# class_modulate


def cm_inputs(n, c, h, w, hl, wl, num_classes, dtype=torch.float32, layout="contiguous", scales=False,
              case="natural", label_dtype=torch.int64):
    """x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta on CUDA, all float leaves requiring grad."""
    acc = opmath(dtype)
    x = randn((n, c, h, w), dtype, layout, requires_grad=True)
    xf = x.detach().to(acc)
    mean = xf.mean((2, 3)).requires_grad_()
    rstd = (xf.var((2, 3), unbiased=False) + 1e-5).rsqrt().requires_grad_()
    labels = labels_for(case, n, hl, wl, num_classes, label_dtype)
    weight = on_device(torch.rand(num_classes, c, dtype=torch.float64).to(acc), requires_grad=True)
    bias = on_device(torch.randn(num_classes, c, dtype=torch.float64).to(acc), requires_grad=True)
    sg = sb = None
    if scales:
        sg = on_device((1 + 0.5 * torch.randn(n, h, w, dtype=torch.float64)).to(acc), requires_grad=True)
        sb = on_device((1 + 0.5 * torch.randn(n, h, w, dtype=torch.float64)).to(acc), requires_grad=True)
    return x, mean, rstd, labels, weight, bias, sg, sb


def cm(impl, offset):
    def fn(x, mean, rstd, labels, weight, bias, sg, sb):
        return F.class_modulate(x, mean, rstd, labels, weight, bias, scale_gamma=sg, scale_beta=sb, offset=offset,
                                impl=impl)
    return fn


CM_NAMES = ["x", "mean", "rstd", "weight", "bias", "scale_gamma", "scale_beta"]


def check_cm(ins, offset, dtype, grad_scale=None, det=False):
    grad_scale = grad_scale if grad_scale is not None else (1.0 if dtype in (torch.float32, torch.float64) else 20.0)
    g = randn(ins[0].shape, dtype)
    with deterministic(det):
        y, gs = grads(cm("native", offset), ins, g)
    yr, gsr = grads(cm("reference", offset), ins, g)
    assert y.is_contiguous() and y.device.type == DEV
    assert_close(y, yr, dtype)
    names = [nm for nm, t in zip(CM_NAMES, [ins[0], *ins[1:3], *ins[4:]]) if t is not None]
    assert len(gs) == len(gsr) == len(names)
    for name, a, b in zip(names, gs, gsr):
        assert_close(a, b, dtype if name == "x" else opmath(dtype), scale=1.0 if name == "x" else grad_scale,
                     msg=lambda m, name=name: f"grad of {name}: {m}")


class TestClassModulateCuda:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("scales", [False, True])
    @pytest.mark.parametrize("offset", [0.0, 1.0])
    def test_forward_backward(self, dtype, layout, scales, offset):
        check_cm(cm_inputs(2, 5, 9, 7, 18, 14, 6, dtype, layout, scales), offset, dtype)

    @pytest.mark.parametrize("case", list(LABEL_CASES))
    @pytest.mark.parametrize("res", RESOLUTIONS)
    @pytest.mark.parametrize("scales", [False, True])
    def test_label_cases(self, case, res, scales):
        (h, w), (hl, wl) = res
        check_cm(cm_inputs(3, 4, h, w, hl, wl, 7, scales=scales, case=case), 0.0, torch.float32)

    @pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
    def test_label_dtypes(self, label_dtype):
        check_cm(cm_inputs(2, 3, 6, 10, 17, 23, 5, scales=True, label_dtype=label_dtype), 1.0, torch.float32)

    @pytest.mark.parametrize("which", ["none", "gamma", "beta", "both"])
    @pytest.mark.parametrize("hw", [(64, 64), (63, 65)])
    def test_several_chunks_per_plane(self, which, hw):
        h, w = hw
        x, mean, rstd, labels, weight, bias, sg, sb = cm_inputs(2, 3, h, w, h, w, 6, scales=True)
        sg = sg if which in ("gamma", "both") else None
        sb = sb if which in ("beta", "both") else None
        check_cm((x, mean, rstd, labels, weight, bias, sg, sb), 1.0, torch.float32, grad_scale=8.0)

    @pytest.mark.parametrize("det", [False, True])
    @pytest.mark.parametrize("scales", [False, True])
    def test_many_classes(self, det, scales):
        # L = 5000: bank columns read in place, tables in shared memory (fast) or global rows (deterministic)
        ins = cm_inputs(2, 3, 12, 10, 12, 10, 5000, scales=scales, case="random")
        check_cm(ins, 1.0, torch.float32, det=det)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("case", ["natural", "random"])
    def test_deterministic(self, dtype, case):
        ins = cm_inputs(2, 4, 64, 48, 64, 48, 10, dtype, scales=True, case=case)
        g = randn(ins[0].shape, dtype)
        with deterministic():
            first = grads(cm("native", 1.0), ins, g)
            second = grads(cm("native", 1.0), ins, g)
        fast = grads(cm("native", 1.0), ins, g)
        for a, b, f in zip([first[0], *first[1]], [second[0], *second[1]], [fast[0], *fast[1]]):
            assert_bitwise_equal(a, b)
            assert_close(a, f, a.dtype, scale=20)

    def test_noncontiguous_grad_and_expanded_stats(self):
        x, mean, rstd, labels, weight, bias, sg, sb = [t.detach() if isinstance(t, torch.Tensor) else t
                                                       for t in cm_inputs(3, 4, 6, 5, 6, 5, 4, scales=True)]
        mean_b, rstd_b = mean[:1].expand(3, 4), rstd[:1].expand(3, 4)
        g = randn((3, 4, 6, 5)).contiguous(memory_format=torch.channels_last)
        out = torch.ops.semnorm.class_modulate_backward(g, x, mean_b, rstd_b, labels, weight, bias, sg, sb, 1.0)
        exp = torch.ops.semnorm.class_modulate_backward(g.contiguous(), x, mean_b.contiguous(), rstd_b.contiguous(),
                                                        labels, weight, bias, sg, sb, 1.0)
        for a, e in zip(out, exp):
            torch.testing.assert_close(a, e)
        cpu = torch.ops.semnorm.class_modulate_backward(*[t.cpu() if isinstance(t, torch.Tensor) else t
                                                          for t in (g, x, mean_b, rstd_b, labels, weight, bias, sg, sb)],
                                                        1.0)
        for a, e in zip(out, cpu):
            torch.testing.assert_close(a.cpu(), e, rtol=1e-4, atol=1e-4)

    def test_backward_without_scales_returns_empty(self):
        x, mean, rstd, labels, weight, bias, _, _ = [t.detach() if isinstance(t, torch.Tensor) else t
                                                     for t in cm_inputs(2, 3, 4, 4, 4, 4, 3)]
        out = torch.ops.semnorm.class_modulate_backward(torch.randn_like(x), x, mean, rstd, labels, weight, bias,
                                                        None, None, 0.0)
        assert len(out) == 7 and out[5].numel() == 0 and out[6].numel() == 0
        assert all(t.device.type == DEV for t in out)

    def test_out_of_range_label_then_recovers(self):
        ins = cm_inputs(2, 3, 4, 4, 4, 4, 5)
        d = [t.detach() if isinstance(t, torch.Tensor) else t for t in ins]
        bad = d[3].clone()
        bad[0, 0, 0] = 5
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 5\), found 5"):
            torch.ops.semnorm.class_modulate(d[0], d[1], d[2], bad, d[4], d[5], None, None, 0.0)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 5\), found -1"):
            torch.ops.semnorm.class_modulate_backward(torch.randn_like(d[0]), d[0], d[1], d[2], bad - 6, d[4], d[5],
                                                      None, None, 0.0)
        torch.cuda.synchronize()
        check_cm(ins, 0.0, torch.float32)

    def test_mixed_devices_refused(self):
        x, mean, rstd, labels, weight, bias, _, _ = [t.detach() for t in cm_inputs(2, 3, 4, 4, 4, 4, 5)[:6]] + [None, None]
        with pytest.raises(RuntimeError, match="weight is on"):
            torch.ops.semnorm.class_modulate(x, mean, rstd, labels, weight.cpu(), bias, None, None, 0.0)

    @pytest.mark.parametrize("scales", [False, True])
    def test_opcheck(self, scales):
        x, mean, rstd, labels, weight, bias, sg, sb = cm_inputs(2, 3, 6, 5, 12, 10, 4, scales=scales)
        torch.library.opcheck(torch.ops.semnorm.class_modulate.default, (x, mean, rstd, labels, weight, bias, sg, sb, 1.0))
        d = [t.detach() if isinstance(t, torch.Tensor) else t for t in (x, mean, rstd, labels, weight, bias, sg, sb)]
        torch.library.opcheck(torch.ops.semnorm.class_modulate_backward.default, (randn((2, 3, 6, 5)), *d, 0.0))

    @pytest.mark.parametrize("scales", [False, True])
    def test_gradcheck_float64(self, scales):
        x, mean, rstd, labels, weight, bias, sg, sb = cm_inputs(2, 3, 5, 4, 7, 3, 5, torch.float64, scales=scales,
                                                                case="absent_labels")
        lab = labels
        if scales:
            fn = lambda *t: F.class_modulate(t[0], t[1], t[2], lab, t[3], t[4], scale_gamma=t[5], scale_beta=t[6],  # noqa: E731
                                             offset=1.0, impl="native")
            inputs = (x, mean, rstd, weight, bias, sg, sb)
        else:
            fn = lambda *t: F.class_modulate(t[0], t[1], t[2], lab, t[3], t[4], offset=1.0, impl="native")  # noqa: E731
            inputs = (x, mean, rstd, weight, bias)
        assert torch.autograd.gradcheck(fn, inputs)

    @pytest.mark.parametrize("scales", [False, True])
    def test_compile_fullgraph(self, scales):
        def f(x, mean, rstd, labels, weight, bias, sg, sb):
            y = F.class_modulate(x, mean, rstd, labels, weight, bias, scale_gamma=sg, scale_beta=sb, impl="native")
            return torch.relu(y) * 2

        ins = cm_inputs(2, 3, 8, 8, 16, 16, 5, scales=scales)
        g = randn(ins[0].shape)
        out, gs = grads(torch.compile(f, fullgraph=True), ins, g)
        ref, gsr = grads(f, ins, g)
        assert_close(out, ref)
        for a, b in zip(gs, gsr):
            assert_close(a, b)


# ----------------------------------------------------------------------------------------------
# label_tap_gather


def tap(impl, k, h, w):
    return lambda table, labels: F.label_tap_gather(table, labels, k, h, w, impl=impl)


def check_tap(table, labels, k, h, w, dtype, scale=2.0, grad_scale=4.0, layout="contiguous", det=False):
    g = randn((labels.shape[0], table.shape[1], h, w), dtype, layout)
    with deterministic(det):
        out, (gt,) = grads(tap("native", k, h, w), (table, labels), g)
    ref, (gtr,) = grads(tap("reference", k, h, w), (table, labels), g)
    assert out.is_contiguous() and out.device.type == DEV
    assert_close(out, ref, dtype, scale=scale)
    assert_close(gt, gtr, dtype, scale=grad_scale)


KS = [1, 3, 5, 7, 9]


class TestLabelTapGatherCuda:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("k", KS)
    @pytest.mark.parametrize("t_count", [1, 3])
    def test_forward_backward(self, dtype, layout, k, t_count):
        table = randn((t_count, 5, k * k, 6), dtype, layout, requires_grad=True)
        labels = labels_for("natural", 3, 14, 18, 6)
        check_tap(table, labels, k, 7, 9, dtype, layout=layout, grad_scale=4.0 if k <= 3 else 8.0)

    @pytest.mark.parametrize("case", list(LABEL_CASES))
    @pytest.mark.parametrize("res", RESOLUTIONS)
    @pytest.mark.parametrize("k", [1, 3, 5])
    def test_label_cases(self, case, res, k):
        (h, w), (hl, wl) = res
        labels = labels_for(case, 2, hl, wl, 5)
        for t_count in (1, 2):
            check_tap(randn((t_count, 3, k * k, 5), requires_grad=True), labels, k, h, w, torch.float32)

    @pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
    def test_label_dtypes(self, label_dtype):
        labels = labels_for("random", 2, 6, 5, 7, label_dtype)
        check_tap(randn((1, 3, 9, 7), requires_grad=True), labels, 3, 6, 5, torch.float32)

    @pytest.mark.parametrize("k", [3, 5])
    @pytest.mark.parametrize("hw", [(64, 64), (61, 67)])
    @pytest.mark.parametrize("t_count", [1, 2])
    def test_several_chunks_per_plane(self, k, hw, t_count):
        h, w = hw
        labels = labels_for("natural", 2, h, w, 8)
        check_tap(randn((t_count, 6, k * k, 8), requires_grad=True), labels, k, h, w, torch.float32, grad_scale=8.0)

    @pytest.mark.parametrize("det", [False, True])
    @pytest.mark.parametrize("k", [3, 5])
    def test_many_classes(self, det, k):
        # L = 400: the forward reads the table in place; the backward's tables leave shared memory
        # (k = 5 fast path, both deterministic cases)
        labels = labels_for("random", 2, 20, 24, 400)
        check_tap(randn((1, 6, k * k, 400), requires_grad=True), labels, k, 20, 24, torch.float32, det=det)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("k", [3, 5, 7])
    @pytest.mark.parametrize("case", ["natural", "random"])
    def test_deterministic(self, dtype, k, case):
        labels = labels_for(case, 2, 48, 64, 10)
        g = randn((2, 4, 48, 64), dtype)
        for t_count in (1, 2):
            table = randn((t_count, 4, k * k, 10), dtype, requires_grad=True)
            with deterministic():
                first = grads(tap("native", k, 48, 64), (table, labels), g)
                second = grads(tap("native", k, 48, 64), (table, labels), g)
            fast = grads(tap("native", k, 48, 64), (table, labels), g)
            assert_bitwise_equal(first[0], second[0])
            assert_bitwise_equal(first[1][0], second[1][0])
            assert_close(first[1][0], fast[1][0], dtype, scale=20)

    def test_backward_op_vs_cpu(self):
        labels = labels_for("natural", 3, 9, 11, 6)
        grad = randn((3, 5, 9, 11))
        for t_count in (1, 3):
            for k in (1, 3, 5, 7, 9):
                out = torch.ops.semnorm.label_tap_gather_backward(grad, labels, t_count, 6, k)
                cpu = torch.ops.semnorm.label_tap_gather_backward(grad.cpu(), labels.cpu(), t_count, 6, k)
                torch.testing.assert_close(out.cpu(), cpu, rtol=1e-5, atol=1e-5)

    def test_out_of_range_label_then_recovers(self):
        table = randn((1, 2, 9, 4))
        labels = labels_for("random", 2, 3, 3, 4)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found 9"):
            torch.ops.semnorm.label_tap_gather(table, torch.full((2, 3, 3), 9, device=DEV), 3, 3, 3)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found 300"):
            torch.ops.semnorm.label_tap_gather_backward(randn((2, 2, 3, 3)),
                                                        torch.full((2, 2, 2), 300, dtype=torch.int32, device=DEV), 1, 4, 3)
        torch.cuda.synchronize()
        check_tap(table.requires_grad_(), labels, 3, 3, 3, torch.float32)

    @pytest.mark.parametrize("t_count", [1, 2])
    def test_opcheck(self, t_count):
        labels = labels_for("natural", 2, 12, 10, 4)
        table = randn((t_count, 3, 9, 4), requires_grad=True)
        torch.library.opcheck(torch.ops.semnorm.label_tap_gather.default, (table, labels, 3, 6, 5))
        grad = randn((2, 3, 6, 5), requires_grad=True)
        torch.library.opcheck(torch.ops.semnorm.label_tap_gather_backward.default, (grad, labels, t_count, 4, 3))

    def test_gradcheck_float64(self):
        labels = labels_for("natural", 2, 10, 8, 4)
        for t_count in (1, 2):
            table = randn((t_count, 2, 9, 4), torch.float64, requires_grad=True)
            fn = lambda t: F.label_tap_gather(t, labels, 3, 5, 4, impl="native")  # noqa: E731
            assert torch.autograd.gradcheck(fn, (table,))
            assert torch.autograd.gradgradcheck(fn, (table,))

    def test_compile_fullgraph(self):
        def f(labels, weight, bias, codes, weight2):
            a = torch.relu(F.label_conv(labels, weight, bias, (8, 8), impl="native"))
            return a + F.region_conv(codes, labels, weight2, None, (8, 8), impl="native")

        labels = labels_for("natural", 2, 16, 16, 5)
        args = (labels, randn((4, 5, 3, 3), requires_grad=True), randn((4,), requires_grad=True),
                randn((2, 5, 6), requires_grad=True), randn((4, 6, 3, 3), requires_grad=True))
        out = torch.compile(f, fullgraph=True)(*args)
        ref = f(*args)
        assert_close(out, ref)
        for a, b in zip(torch.autograd.grad(out.sum(), args[1:]), torch.autograd.grad(ref.sum(), args[1:])):
            assert_close(a, b)
