"""class_modulate (CLADE guided sampling + normalize + modulate): kernels (native, Triton; CPU, CUDA) vs reference vs a naive loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from optest import (
    DEVICES, DTYPES, KERNEL_IMPLS, LABEL_CASES, LABEL_DTYPES, LAYOUTS, RESOLUTIONS, assert_close, make_x, needs_triton,
)

from semnorm import functional as F
from semnorm import reference
from semnorm._extension import op_namespace


def opmath(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def make_inputs(n, c, h, w, hl, wl, num_classes, dtype=torch.float32, layout="contiguous", scales=False,
                case="natural", label_dtype=torch.int64, requires_grad=True):
    """x, mean, rstd (instance statistics of x), labels, weight, bias, scale_gamma, scale_beta."""
    acc = opmath(dtype)
    x = make_x((n, c, h, w), dtype, layout)
    xf = x.to(acc)
    mean = xf.mean((2, 3))
    rstd = (xf.var((2, 3), unbiased=False) + 1e-5).rsqrt()
    labels = LABEL_CASES[case](n, hl, wl, num_classes).to(label_dtype)
    weight = torch.rand(num_classes, c, dtype=torch.float64).to(acc)
    bias = torch.randn(num_classes, c, dtype=torch.float64).to(acc)
    sg = sb = None
    if scales:
        sg = (1 + 0.5 * torch.randn(n, h, w, dtype=torch.float64)).to(acc)
        sb = (1 + 0.5 * torch.randn(n, h, w, dtype=torch.float64)).to(acc)
    tensors = [x, mean, rstd, weight, bias, sg, sb]
    if requires_grad:
        tensors = [t.requires_grad_() if t is not None else None for t in tensors]
    x, mean, rstd, weight, bias, sg, sb = tensors
    return x, mean, rstd, labels, weight, bias, sg, sb


def clone_leaves(tensors):
    return [t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
            for t in tensors]


def run(impl, x, mean, rstd, labels, weight, bias, sg, sb, offset):
    return F.class_modulate(x, mean, rstd, labels, weight, bias, scale_gamma=sg, scale_beta=sb, offset=offset, impl=impl)


def naive_class_modulate(x, mean, rstd, labels, weight, bias, sg=None, sb=None, offset=0.0):
    """Loop over (n, class) with boolean masks, labels resized by F.interpolate; float64."""
    n, c, h, w = x.shape
    lab = TF.interpolate(labels[:, None].double(), size=(h, w), mode="nearest")[:, 0].long()
    x = x.double()
    y = torch.zeros(n, c, h, w, dtype=torch.float64)
    for i in range(n):
        xhat = (x[i] - mean[i].double()[:, None, None]) * rstd[i].double()[:, None, None]
        s_g = sg[i].double() if sg is not None else torch.ones(h, w, dtype=torch.float64)
        s_b = sb[i].double() if sb is not None else torch.ones(h, w, dtype=torch.float64)
        for j in range(weight.shape[0]):
            mask = lab[i] == j
            if mask.any():
                g = offset + weight[j].double()[:, None] * s_g[mask][None]
                y[i][:, mask] = xhat[:, mask] * g + bias[j].double()[:, None] * s_b[mask][None]
    return y


@pytest.mark.parametrize("case", list(LABEL_CASES))
@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("scales", [False, True])
def test_reference_matches_naive_loop(case, res, scales):
    (h, w), (hl, wl) = res
    ins = make_inputs(2, 3, h, w, hl, wl, 5, torch.float64, scales=scales, case=case, requires_grad=False)
    for offset in (0.0, 1.0):
        y = reference.class_modulate(*ins, offset=offset)
        torch.testing.assert_close(y, naive_class_modulate(*ins, offset=offset))


def to_device(t, device):
    """``t`` on ``device`` with the same strides (a strided view stays strided) and requires_grad."""
    if not isinstance(t, torch.Tensor) or t.device.type == device:
        return t
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)
    out.copy_(t.detach())
    return out.requires_grad_(t.requires_grad)


def compare_kernel_reference(impl, ins, offset, dtype, grad_scale=1.0):
    """Forward and every gradient, kernel vs reference, on independent copies of the leaves."""
    a, b = clone_leaves(ins), clone_leaves(ins)
    y = run(impl, *a, offset)
    yr = run("reference", *b, offset)
    assert y.is_contiguous()
    assert_close(y, yr, dtype)
    g = torch.randn_like(yr)
    y.backward(g)
    yr.backward(g)
    names = ["x", "mean", "rstd", "labels", "weight", "bias", "scale_gamma", "scale_beta"]
    for name, t, tr in zip(names, a, b):
        if not (isinstance(t, torch.Tensor) and t.requires_grad):
            continue
        assert t.grad is not None and tr.grad is not None, name
        # x's gradient is in x's dtype; the others are opmath sums of many low precision terms.
        assert_close(t.grad, tr.grad, dtype if name == "x" else opmath(dtype), scale=grad_scale if name != "x" else 1.0,
                     msg=lambda m, name=name: f"grad of {name}: {m}")
    return a


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


def low_precision_scale(dtype):
    # low precision: dy is rounded once, sums over many pixels in float32 in both; allow for it
    return 1.0 if dtype in (torch.float32, torch.float64) else 20.0


BACKENDS = backend_params([()])

# Triton on the CPU: a subset of each grid, with every dtype, layout, label case and resolution
# (odd, 1x1, coarser/finer labels), both scale settings and both offsets still present.
FB_CASES = [(d, lay, sc, off) for d in DTYPES for lay in LAYOUTS for sc in (False, True) for off in (0.0, 1.0)]
FB_INTERP = [(torch.float32, "contiguous", True, 0.0), (torch.float64, "channels_last", True, 1.0),
             (torch.bfloat16, "strided", True, 1.0), (torch.float16, "channels_last", False, 0.0),
             (torch.float32, "strided", False, 1.0), (torch.float64, "contiguous", False, 0.0)]
CASE_CASES = [(case, r, sc) for case in LABEL_CASES for r in RESOLUTIONS for sc in (False, True)]
CASE_INTERP = [(case, RESOLUTIONS[(2 * i + j) % len(RESOLUTIONS)], j == 1) for i, case in enumerate(LABEL_CASES) for j in (0, 1)]
RUN_CASES = [(d, which) for d in DTYPES for which in ("none", "gamma", "beta")]
RUN_INTERP = [(d, ("none", "gamma", "beta")[i % 3]) for i, d in enumerate(DTYPES)]


class TestClassModulateKernels:
    @pytest.mark.parametrize("impl,device,dtype,layout,scales,offset", backend_params(FB_CASES, FB_INTERP))
    def test_forward_backward(self, impl, device, dtype, layout, scales, offset):
        ins = [to_device(t, device) for t in make_inputs(2, 5, 9, 7, 18, 14, 6, dtype, layout, scales)]
        compare_kernel_reference(impl, ins, offset, dtype, grad_scale=low_precision_scale(dtype))

    @pytest.mark.parametrize("impl,device,case,res,scales", backend_params(CASE_CASES, CASE_INTERP))
    def test_label_cases(self, impl, device, case, res, scales):
        (h, w), (hl, wl) = res
        ins = [to_device(t, device) for t in make_inputs(3, 4, h, w, hl, wl, 7, scales=scales, case=case)]
        compare_kernel_reference(impl, ins, 0.0, torch.float32)

    @pytest.mark.parametrize("impl,device,dtype,which", backend_params(RUN_CASES, RUN_INTERP))
    def test_long_runs(self, impl, device, dtype, which):
        # Runs of equal labels longer than the kernels' vector width, plus short ones, in one plane.
        x, mean, rstd, labels, weight, bias, sg, sb = make_inputs(2, 3, 16, 21, 16, 21, 5, dtype, scales=True)
        labels = torch.zeros(2, 16, 21, dtype=torch.int64)
        labels[:, :, 10:] = 3
        labels[:, 5, :] = torch.arange(21) % 5  # a fragmented row
        labels[1, 9:] = 4
        sg = sg if which == "gamma" else None
        sb = sb if which == "beta" else None
        ins = [to_device(t, device) for t in (x, mean, rstd, labels, weight, bias, sg, sb)]
        compare_kernel_reference(impl, ins, 1.0, dtype, grad_scale=low_precision_scale(dtype))

    @pytest.mark.parametrize("impl,device,label_dtype", backend_params(LABEL_DTYPES))
    def test_label_dtypes(self, impl, device, label_dtype):
        ins = [to_device(t, device) for t in make_inputs(2, 3, 6, 10, 17, 23, 5, scales=True, label_dtype=label_dtype)]
        compare_kernel_reference(impl, ins, 1.0, torch.float32)

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_absent_labels_get_zero_gradient_rows(self, impl, device):
        ins = [to_device(t, device) for t in make_inputs(2, 3, 8, 8, 8, 8, 7, case="absent_labels", scales=True)]
        a = compare_kernel_reference(impl, ins, 0.0, torch.float32)
        present = torch.zeros(7, dtype=torch.bool, device=device)
        present[ins[3].unique()] = True
        assert (a[4].grad[~present] == 0).all() and (a[5].grad[~present] == 0).all()
        assert (a[5].grad[present] != 0).any()

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_noncontiguous_grad_and_expanded_stats(self, impl, device):
        # batch statistics expanded over N (stride 0) and a channels_last upstream gradient
        ops = op_namespace(impl)
        x, mean, rstd, labels, weight, bias, sg, sb = (
            to_device(t, device) for t in make_inputs(3, 4, 6, 5, 6, 5, 4, scales=True, requires_grad=False))
        mean_b, rstd_b = mean[:1].expand(3, 4), rstd[:1].expand(3, 4)
        g = torch.randn(3, 4, 6, 5, device=device).contiguous(memory_format=torch.channels_last)
        out = ops.class_modulate_backward(g, x, mean_b, rstd_b, labels, weight, bias, sg, sb, 1.0)
        exp = ops.class_modulate_backward(g.contiguous(), x, mean_b.contiguous(), rstd_b.contiguous(),
                                          labels, weight, bias, sg, sb, 1.0)
        for a, e in zip(out, exp):
            torch.testing.assert_close(a, e)
        y = ops.class_modulate(x, mean_b, rstd_b, labels, weight, bias, sg, sb, 1.0)
        assert_close(y, reference.class_modulate(x, mean_b, rstd_b, labels, weight, bias, sg, sb, 1.0))

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_backward_without_scales_returns_empty(self, impl, device):
        x, mean, rstd, labels, weight, bias, _, _ = (
            to_device(t, device) for t in make_inputs(2, 3, 4, 4, 4, 4, 3, requires_grad=False))
        grads = op_namespace(impl).class_modulate_backward(torch.randn_like(x), x, mean, rstd, labels, weight, bias,
                                                           None, None, 0.0)
        assert len(grads) == 7
        assert grads[5].numel() == 0 and grads[6].numel() == 0
        assert grads[3].shape == (3, 3) and grads[1].shape == (2, 3)

    @pytest.mark.parametrize("impl,device,scales,offset", backend_params([(s, o) for s in (False, True) for o in (0.0, 1.0)]))
    def test_gradcheck_float64(self, impl, device, scales, offset):
        fast = interpreted(impl, device)  # the interpreter: random projections, not full Jacobians
        x, mean, rstd, labels, weight, bias, sg, sb = (
            to_device(t, device) for t in make_inputs(2, 3, 5, 4, 7, 3, 5, torch.float64, scales=scales,
                                                      case="absent_labels"))
        if scales:
            fn = lambda *t: F.class_modulate(t[0], t[1], t[2], labels, t[3], t[4], scale_gamma=t[5], scale_beta=t[6],  # noqa: E731
                                             offset=offset, impl=impl)
            inputs = (x, mean, rstd, weight, bias, sg, sb)
        else:
            fn = lambda *t: F.class_modulate(t[0], t[1], t[2], labels, t[3], t[4], offset=offset, impl=impl)  # noqa: E731
            inputs = (x, mean, rstd, weight, bias)
        assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast)

    def test_reference_gradcheck_float64(self):
        x, mean, rstd, labels, weight, bias, sg, sb = make_inputs(2, 3, 4, 5, 9, 11, 4, torch.float64, scales=True)
        assert torch.autograd.gradcheck(
            lambda *t: reference.class_modulate(t[0], t[1], t[2], labels, t[3], t[4], t[5], t[6], offset=1.0),
            (x, mean, rstd, weight, bias, sg, sb))

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_gradcheck_one_scale(self, impl, device):
        fast = interpreted(impl, device)
        x, mean, rstd, labels, weight, bias, sg, sb = (
            to_device(t, device) for t in make_inputs(1, 2, 3, 4, 3, 4, 3, torch.float64, scales=True))
        assert torch.autograd.gradcheck(
            lambda t, s: F.class_modulate(t, mean, rstd, labels, weight, bias, scale_gamma=s, impl=impl), (x, sg),
            fast_mode=fast)
        assert torch.autograd.gradcheck(
            lambda t, s: F.class_modulate(t, mean, rstd, labels, weight, bias, scale_beta=s, impl=impl), (x, sb),
            fast_mode=fast)

    @pytest.mark.parametrize("impl,device,scales", backend_params([False, True]))
    def test_opcheck(self, impl, device, scales):
        ops = op_namespace(impl)
        x, mean, rstd, labels, weight, bias, sg, sb = (
            to_device(t, device) for t in make_inputs(2, 3, 6, 5, 12, 10, 4, scales=scales))
        torch.library.opcheck(ops.class_modulate.default, (x, mean, rstd, labels, weight, bias, sg, sb, 1.0))
        d = [t.detach() if isinstance(t, torch.Tensor) else t for t in (x, mean, rstd, labels, weight, bias, sg, sb)]
        torch.library.opcheck(ops.class_modulate_backward.default, (torch.randn(2, 3, 6, 5, device=device), *d, 0.0))

    @pytest.mark.parametrize("impl,device,scales", backend_params([False, True]))
    def test_compile_fullgraph(self, impl, device, scales):
        def f(x, mean, rstd, labels, weight, bias, sg, sb):
            y = F.class_modulate(x, mean, rstd, labels, weight, bias, scale_gamma=sg, scale_beta=sb, impl=impl)
            return torch.relu(y) * 2

        ins = [to_device(t, device) for t in make_inputs(2, 3, 8, 8, 16, 16, 5, scales=scales)]
        a, b = clone_leaves(ins), clone_leaves(ins)
        out = torch.compile(f, fullgraph=True)(*a)
        ref = f(*b)
        assert_close(out, ref)
        out.sum().backward()
        ref.sum().backward()
        for t, tr in zip(a, b):
            if isinstance(t, torch.Tensor) and t.requires_grad:
                assert_close(t.grad, tr.grad)

    @pytest.mark.parametrize("impl,device,scales", backend_params([False, True]))
    def test_deterministic_mode(self, impl, device, scales):
        # Deterministic algorithms: every output bitwise equal on two runs, and equal to the fast path
        # (atomics) within tolerance.
        x, mean, rstd, labels, weight, bias, sg, sb = (
            to_device(t, device) for t in make_inputs(3, 6, 11, 13, 22, 26, 7, scales=scales, requires_grad=False))
        g = torch.randn_like(x)
        ops = op_namespace(impl)
        fast = ops.class_modulate_backward(g, x, mean, rstd, labels, weight, bias, sg, sb, 1.0)
        old = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            a = ops.class_modulate_backward(g, x, mean, rstd, labels, weight, bias, sg, sb, 1.0)
            b = ops.class_modulate_backward(g, x, mean, rstd, labels, weight, bias, sg, sb, 1.0)
        finally:
            torch.use_deterministic_algorithms(old)
        for ta, tb, tf in zip(a, b, fast):
            assert torch.equal(ta, tb)
            assert_close(ta, tf)

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_clade_end_to_end_matches_published_formulation(self, impl, device):
        # Batch statistics, CLADE's offset 0: equals BN(x) * gamma + beta with gamma, beta from the
        # published guided sampling (one-hot at label resolution, nearest resize, argmax, embedding).
        n, c, h, w, num_classes = 3, 6, 8, 12, 9
        x = torch.randn(n, c, h, w, dtype=torch.float64, device=device)
        labels = LABEL_CASES["natural"](n, 21, 29, num_classes).to(device)
        weight = torch.rand(num_classes, c, dtype=torch.float64, device=device)
        bias = torch.randn(num_classes, c, dtype=torch.float64, device=device)
        mean = x.mean((0, 2, 3))
        rstd = (x.var((0, 2, 3), unbiased=False) + 1e-5).rsqrt()
        y = F.class_modulate(x, mean.expand(n, c), rstd.expand(n, c), labels, weight, bias, impl=impl)

        onehot = TF.one_hot(labels, num_classes).permute(0, 3, 1, 2).double()
        idx = TF.interpolate(onehot, size=(h, w), mode="nearest").argmax(1)
        gamma = TF.embedding(idx, weight).permute(0, 3, 1, 2)
        beta = TF.embedding(idx, bias).permute(0, 3, 1, 2)
        expected = TF.batch_norm(x, None, None, training=True, eps=1e-5) * gamma + beta
        torch.testing.assert_close(y, expected)
        torch.testing.assert_close(F.class_modulate(x, mean.expand(n, c), rstd.expand(n, c), labels, weight, bias,
                                                    impl="reference"), expected)

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_fuzz_shapes(self, impl, device):
        @settings(max_examples=6 if interpreted(impl, device) else settings().max_examples)
        @given(
            n=st.integers(1, 3), c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9),
            hl=st.integers(1, 12), wl=st.integers(1, 12), num_classes=st.integers(1, 9), scales=st.booleans(),
            offset=st.sampled_from([0.0, 1.0, -0.5]), seed=st.integers(0, 2**16),
        )
        def check(n, c, h, w, hl, wl, num_classes, scales, offset, seed):
            torch.manual_seed(seed)
            ins = [to_device(t, device) for t in make_inputs(n, c, h, w, hl, wl, num_classes, scales=scales, case="random")]
            compare_kernel_reference(impl, ins, offset, torch.float32)

        check()


# Small tiles under the interpreter, so the kernels' loops run several times: several pixel blocks
# and channel chunks per program, several programs along the pixels (S) and the channels (CG), and the
# deterministic path's partial tables with read-modify-writes across blocks.
SMALL_TILES = [((16, 2, 32), 4), ((16, 2, 32), 16)]


@needs_triton
@pytest.mark.parametrize("tiles,programs", SMALL_TILES)
@pytest.mark.parametrize("det", [False, True])
def test_triton_small_tiles(monkeypatch, tiles, programs, det):
    from semnorm.triton import _labels

    monkeypatch.setattr(_labels, "INTERPRETER_TILES", tiles)
    monkeypatch.setattr(_labels, "INTERPRETER_PROGRAMS", programs)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: det)
    compare_kernel_reference("triton", make_inputs(2, 5, 9, 7, 18, 14, 6, scales=True), 1.0, torch.float32)


class TestClassModulateErrors:
    @pytest.mark.parametrize("impl", ["native", pytest.param("triton", marks=needs_triton), "reference"])
    def test_bad_input(self, impl):
        if impl == "native":
            pytest.importorskip("semnorm._C", reason="extension not built")
        x, mean, rstd, labels, weight, bias, sg, sb = make_inputs(2, 3, 4, 4, 4, 4, 5, scales=True, requires_grad=False)
        good = torch.zeros(2, 4, 4, dtype=torch.int64)

        def call(**kw):
            args = dict(x=x, mean=mean, rstd=rstd, labels=good, weight=weight, bias=bias)
            args.update(kw)
            return F.class_modulate(args.pop("x"), args.pop("mean"), args.pop("rstd"), args.pop("labels"),
                                    args.pop("weight"), args.pop("bias"), impl=impl, **args)

        with pytest.raises(IndexError, match=r"labels must lie in \[0, 5\), found 5"):
            call(labels=good + 5)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 5\), found -1"):
            call(labels=good - 1)
        with pytest.raises(TypeError, match="labels must be an integer tensor"):
            call(labels=good.float())
        with pytest.raises(ValueError, match="labels has batch size 1"):
            call(labels=good[:1])
        with pytest.raises(ValueError, match="x must have 4 dimensions"):
            call(x=x[0])
        with pytest.raises(ValueError, match="x must not be empty"):
            call(x=x[:, :, :0])
        with pytest.raises(TypeError, match="x must be a floating point"):
            call(x=x.long())
        with pytest.raises(ValueError, match=r"weight must have shape \(L, 3\)"):
            call(weight=weight[:, :2])
        with pytest.raises(ValueError, match=r"bias must have shape \(L, 3\)"):
            call(bias=bias[:, :2])
        with pytest.raises(ValueError, match="bias must have weight's shape"):
            call(bias=bias[:4])
        with pytest.raises(TypeError, match="weight must have dtype torch.float32"):
            call(weight=weight.double())
        with pytest.raises(TypeError, match="weight must have dtype torch.float64"):
            call(x=x.double(), mean=mean.double(), rstd=rstd.double())
        with pytest.raises(TypeError, match="mean must have dtype torch.float32"):
            call(x=x.half(), mean=mean.half())
        with pytest.raises(ValueError, match=r"rstd must have shape \(2, 3\)"):
            call(rstd=rstd[:1])
        with pytest.raises(ValueError, match=r"scale_gamma must have shape \(2, 4, 4\)"):
            call(scale_gamma=sg[:, :3])
        with pytest.raises(TypeError, match="scale_beta must have dtype torch.float32"):
            call(scale_beta=sb.double())

    @pytest.mark.parametrize("impl", KERNEL_IMPLS)
    def test_kernel_checks_itself(self, impl):
        # Bypass the Python layer: the kernel refuses bad input on its own, naming the argument. C++
        # raises RuntimeError and spells shapes / dtypes ATen's way ([4, 2], Float); the Triton
        # launchers raise ValueError / TypeError and spell them torch's way ((4, 2), torch.float32).
        native = impl == "native"
        value_error, type_error = (RuntimeError, RuntimeError) if native else (ValueError, TypeError)
        f32, f64 = ("Float", "Double") if native else ("torch.float32", "torch.float64")
        bias_shape = r"\[4, 2\]" if native else r"\(4, 2\)"
        x, mean, rstd, labels, weight, bias, sg, sb = make_inputs(1, 2, 3, 3, 3, 3, 4, scales=True, requires_grad=False)
        ops = op_namespace(impl)
        cm, cmb = ops.class_modulate, ops.class_modulate_backward
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found 9"):
            cm(x, mean, rstd, torch.full((1, 3, 3), 9), weight, bias)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found 300"):
            cm(x, mean, rstd, torch.full((1, 5, 5), 300, dtype=torch.int32), weight, bias, sg, sb, 1.0)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found -2"):
            cmb(x, x, mean, rstd, torch.full((1, 3, 3), -2), weight, bias, None, None, 0.0)
        with pytest.raises(type_error, match="labels must be an integer tensor"):
            cm(x, mean, rstd, torch.zeros(1, 3, 3), weight, bias)
        with pytest.raises(value_error, match="labels has batch size 2"):
            cm(x, mean, rstd, torch.zeros(2, 3, 3, dtype=torch.long), weight, bias)
        with pytest.raises(value_error, match="weight must have C = 2 columns"):
            cm(x, mean, rstd, labels, weight[:, :1], bias)
        with pytest.raises(value_error, match=f"bias must have shape {bias_shape}"):
            cm(x, mean, rstd, labels, weight, bias[:3])
        with pytest.raises(type_error, match=f"weight must have dtype {f32}"):
            cm(x, mean, rstd, labels, weight.double(), bias)
        with pytest.raises(type_error, match=f"mean must have dtype {f64}"):
            cm(x.double(), mean, rstd.double(), labels, weight.double(), bias.double())
        with pytest.raises(value_error, match="x must not be empty"):
            cm(x[:, :, :0], mean, rstd, labels, weight, bias)
        with pytest.raises(value_error, match="scale_gamma must have shape"):
            cm(x, mean, rstd, labels, weight, bias, sg[:, :2])
        with pytest.raises(type_error, match=f"scale_beta must have dtype {f32}"):
            cm(x, mean, rstd, labels, weight, bias, sg, sb.double())
        with pytest.raises(value_error, match="grad_y must have shape"):
            cmb(x[:, :1], x, mean, rstd, labels, weight, bias, None, None, 0.0)
        with pytest.raises(type_error, match=f"grad_y must have dtype {f32}"):
            cmb(x.double(), x, mean, rstd, labels, weight, bias, None, None, 0.0)
