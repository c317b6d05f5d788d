"""region_pool / region_broadcast: kernels (native, Triton; CPU, CUDA) vs reference vs a naive loop."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from optest import (
    DEVICES, DTYPES, KERNEL_IMPLS, LABEL_CASES, LABEL_DTYPES, LAYOUTS, RESOLUTIONS, assert_close, make_x, needs_ext,
    needs_triton,
)

from semnorm import functional as F
from semnorm import reference
from semnorm._extension import op_namespace


def naive_region_pool(x, labels, num_classes, mean):
    """Loop over (n, l) like the published SEAN code; the oracle of the reference."""
    n, c, h, w = x.shape
    lab = torch.nn.functional.interpolate(labels[:, None].double(), size=(h, w), mode="nearest")[:, 0].long()
    pooled = torch.zeros(n, num_classes, c, dtype=torch.float64)
    counts = torch.zeros(n, num_classes, dtype=torch.int64)
    for i in range(n):
        for j in range(num_classes):
            mask = lab[i] == j
            counts[i, j] = mask.sum()
            if mask.any():
                s = x[i].double()[:, mask].sum(1)
                pooled[i, j] = s / mask.sum() if mean else s
    return pooled, counts


@pytest.mark.parametrize("case", list(LABEL_CASES))
@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("mean", [True, False])
def test_reference_matches_naive_loop(case, res, mean):
    (h, w), (hl, wl) = res
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    labels = LABEL_CASES[case](2, hl, wl, 5)
    pooled, counts = reference.region_pool(x, labels, 5, mean)
    exp_pooled, exp_counts = naive_region_pool(x, labels, 5, mean)
    torch.testing.assert_close(counts, exp_counts)
    torch.testing.assert_close(pooled, exp_pooled)
    # broadcast of the pooled codes: each pixel gets its region's code
    lab = torch.nn.functional.interpolate(labels[:, None].double(), size=(h, w), mode="nearest")[:, 0].long()
    out = reference.region_broadcast(pooled, labels, h, w)
    torch.testing.assert_close(out, pooled[torch.arange(2)[:, None, None], lab].permute(0, 3, 1, 2))


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


BACKENDS = backend_params([()])

# Triton on the CPU: a subset of each grid, with every dtype, layout, label dtype, label case and
# resolution (odd, 1x1, coarser/finer labels) still present.
POOL_CASES = [(d, lay, m) for d in DTYPES for lay in LAYOUTS for m in (True, False)]
POOL_INTERP = [(torch.float32, "contiguous", True), (torch.float64, "channels_last", False),
               (torch.bfloat16, "strided", True), (torch.float16, "channels_last", True), (torch.float32, "strided", False)]
BCAST_CASES = [(d, ld, r) for d in DTYPES for ld in LABEL_DTYPES for r in RESOLUTIONS]
BCAST_INTERP = [(DTYPES[i % 4], LABEL_DTYPES[i % 3], r) for i, r in enumerate(RESOLUTIONS)]
CASE_CASES = [(case, r) for case in LABEL_CASES for r in RESOLUTIONS]
CASE_INTERP = [(case, RESOLUTIONS[(i + j) % len(RESOLUTIONS)]) for i, case in enumerate(LABEL_CASES) for j in (0, 3, 5)]


class TestRegionKernels:
    @pytest.mark.parametrize("impl,device,dtype,layout,mean", backend_params(POOL_CASES, POOL_INTERP))
    def test_pool_forward_backward(self, impl, device, dtype, layout, mean):
        x = make_x((2, 5, 9, 7), dtype, layout).to(device).requires_grad_()
        labels = LABEL_CASES["natural"](2, 18, 14, 6).to(device)
        xr = x.detach().clone().requires_grad_()
        p, c = F.region_pool(x, labels, 6, mean, impl=impl)
        pr, cr = F.region_pool(xr, labels, 6, mean, impl="reference")
        assert_close(p, pr, dtype)
        assert torch.equal(c, cr)
        g = torch.randn_like(p)
        p.backward(g)
        pr.backward(g)
        assert_close(x.grad, xr.grad, dtype)

    @pytest.mark.parametrize("impl,device,dtype,label_dtype,res", backend_params(BCAST_CASES, BCAST_INTERP))
    def test_broadcast_forward_backward(self, impl, device, dtype, label_dtype, res):
        (h, w), (hl, wl) = res
        codes = torch.randn(2, 4, 3, dtype=torch.float64).to(dtype).to(device).requires_grad_()
        codes_r = codes.detach().clone().requires_grad_()
        labels = LABEL_CASES["random"](2, hl, wl, 4).to(label_dtype).to(device)
        s = F.region_broadcast(codes, labels, h, w, impl=impl)
        sr = F.region_broadcast(codes_r, labels, h, w, impl="reference")
        assert_close(s, sr, dtype)
        g = torch.randn_like(s)
        s.backward(g)
        sr.backward(g)
        assert_close(codes.grad, codes_r.grad, dtype, scale=4)

    @pytest.mark.parametrize("impl,device,case,res", backend_params(CASE_CASES, CASE_INTERP))
    def test_label_cases(self, impl, device, case, res):
        (h, w), (hl, wl) = res
        x = torch.randn(3, 4, h, w, device=device)
        labels = LABEL_CASES[case](3, hl, wl, 7).to(device)
        for mean in (True, False):
            p, c = F.region_pool(x, labels, 7, mean, impl=impl)
            pr, cr = F.region_pool(x, labels, 7, mean, impl="reference")
            assert_close(p, pr)
            assert torch.equal(c, cr)

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_gradcheck_float64(self, impl, device):
        fast = interpreted(impl, device)  # the interpreter: random projections, not full Jacobians
        x = torch.randn(2, 3, 5, 4, dtype=torch.float64, device=device, requires_grad=True)
        labels = LABEL_CASES["absent_labels"](2, 5, 4, 5).to(device)
        fn = lambda t: F.region_pool(t, labels, 5, True, impl=impl)[0]  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,), fast_mode=fast)
        assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=fast)
        codes = torch.randn(2, 5, 3, dtype=torch.float64, device=device, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: F.region_broadcast(t, labels, 7, 3, impl=impl), (codes,), fast_mode=fast)

    def test_reference_gradcheck_float64(self):
        x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
        labels = LABEL_CASES["natural"](2, 10, 8, 5)
        assert torch.autograd.gradcheck(lambda t: reference.region_pool(t, labels, 5, True)[0], (x,))
        codes = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: reference.region_broadcast(t, labels, 5, 4), (codes,))

    @pytest.mark.parametrize("impl,device,mean", backend_params([True, False]))
    def test_opcheck(self, impl, device, mean):
        ops = op_namespace(impl)
        x = torch.randn(2, 3, 6, 5, device=device, requires_grad=True)
        labels = LABEL_CASES["natural"](2, 12, 10, 4).to(device)
        torch.library.opcheck(ops.region_pool.default, (x, labels, 4, mean))
        codes = torch.randn(2, 4, 3, device=device, requires_grad=True)
        torch.library.opcheck(ops.region_broadcast.default, (codes, labels, 6, 5))

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_compile_fullgraph(self, impl, device):
        def f(x, labels):
            pooled, _ = F.region_pool(x, labels, 5, True, impl=impl)
            return F.region_broadcast(pooled * 2, labels, x.shape[2], x.shape[3], impl=impl)

        x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
        labels = LABEL_CASES["natural"](2, 16, 16, 5).to(device)
        compiled = torch.compile(f, fullgraph=True)
        out = compiled(x, labels)
        ref = f(x, labels)
        assert_close(out, ref)
        (gx,) = torch.autograd.grad(out.sum(), x)
        (gr,) = torch.autograd.grad(ref.sum(), x)
        assert_close(gx, gr)

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_deterministic_mode(self, impl, device):
        # Deterministic algorithms: bitwise equal on two runs, and equal to the fast path within tolerance.
        x = torch.randn(3, 6, 11, 13, device=device)
        labels = LABEL_CASES["natural"](3, 22, 26, 7).to(device)
        fast, counts = F.region_pool(x, labels, 7, True, impl=impl)
        old = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            a, ca = F.region_pool(x, labels, 7, True, impl=impl)
            b, cb = F.region_pool(x, labels, 7, True, impl=impl)
        finally:
            torch.use_deterministic_algorithms(old)
        assert torch.equal(a, b) and torch.equal(ca, cb) and torch.equal(ca, counts)
        assert_close(a, fast)
        assert_close(a, F.region_pool(x, labels, 7, True, impl="reference")[0])

    @pytest.mark.parametrize("impl,device", BACKENDS)
    def test_fuzz_shapes(self, impl, device):
        @settings(max_examples=8 if interpreted(impl, device) else settings().max_examples)
        @given(
            n=st.integers(1, 3), c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9),
            hl=st.integers(1, 12), wl=st.integers(1, 12), num_classes=st.integers(1, 9), seed=st.integers(0, 2**16),
        )
        def check(n, c, h, w, hl, wl, num_classes, seed):
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(n, c, h, w, generator=g).to(device)
            labels = torch.randint(0, num_classes, (n, hl, wl), generator=g).to(device)
            p, cnt = F.region_pool(x, labels, num_classes, True, impl=impl)
            pr, cr = F.region_pool(x, labels, num_classes, True, impl="reference")
            assert_close(p, pr)
            assert torch.equal(cnt, cr)
            assert int(cnt.sum()) == n * h * w
            s = F.region_broadcast(p, labels, h, w, impl=impl)
            assert_close(s, F.region_broadcast(pr, labels, h, w, impl="reference"))

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
    x = torch.randn(2, 5, 9, 7, requires_grad=True)
    labels = LABEL_CASES["natural"](2, 18, 14, 6)
    p, c = F.region_pool(x, labels, 6, True, impl="triton")
    pr, cr = F.region_pool(x, labels, 6, True, impl="reference")
    assert_close(p, pr)
    assert torch.equal(c, cr)
    g = torch.randn_like(p)
    assert_close(torch.autograd.grad(p, x, g)[0], torch.autograd.grad(pr, x, g)[0])


class TestRegionErrors:
    @pytest.mark.parametrize("impl", ["native", pytest.param("triton", marks=needs_triton), "reference"])
    def test_bad_input(self, impl):
        if impl == "native":
            pytest.importorskip("semnorm._C", reason="extension not built")
        x = torch.randn(2, 3, 4, 4)
        good = torch.zeros(2, 4, 4, dtype=torch.int64)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 5\), found 5"):
            F.region_pool(x, good + 5, 5, impl=impl)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 5\), found -1"):
            F.region_pool(x, good - 1, 5, impl=impl)
        with pytest.raises(TypeError, match="labels must be an integer tensor"):
            F.region_pool(x, good.float(), 5, impl=impl)
        with pytest.raises(ValueError, match="labels has batch size 1"):
            F.region_pool(x, good[:1], 5, impl=impl)
        with pytest.raises(ValueError, match="labels must have 3 dimensions"):
            F.region_pool(x, good[0], 5, impl=impl)
        with pytest.raises(ValueError, match="x must have 4 dimensions"):
            F.region_pool(x[0], good, 5, impl=impl)
        with pytest.raises(ValueError, match="x must not be empty"):
            F.region_pool(x[:, :0], good, 5, impl=impl)
        with pytest.raises(TypeError, match="x must be a floating point"):
            F.region_pool(x.long(), good, 5, impl=impl)
        with pytest.raises(ValueError, match="num_classes must be positive"):
            F.region_pool(x, good, 0, impl=impl)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 3\)"):
            F.region_broadcast(torch.randn(2, 3, 4), good + 3, 4, 4, impl=impl)
        with pytest.raises(ValueError, match="codes must be a non-empty"):
            F.region_broadcast(torch.randn(2, 3), good, 4, 4, impl=impl)

    @needs_ext
    def test_kernel_checks_labels_itself(self):
        # Bypass the Python layer: the C++ kernel must refuse out-of-range labels on its own.
        x = torch.randn(1, 2, 3, 3)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found 9"):
            torch.ops.semnorm.region_pool(x, torch.full((1, 3, 3), 9), 4, True)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found 300"):
            torch.ops.semnorm.region_broadcast(torch.randn(1, 4, 2), torch.full((1, 2, 2), 300, dtype=torch.int32), 3, 3)
        with pytest.raises(RuntimeError, match="labels must be an integer tensor"):
            torch.ops.semnorm.region_pool(x, torch.zeros(1, 3, 3), 4, True)

    @needs_triton
    def test_triton_kernel_checks_labels_itself(self):
        # Bypass the Python layer: the Triton launchers refuse out-of-range labels on their own.
        x = torch.randn(1, 2, 3, 3)
        ops = torch.ops.semnorm_triton
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found 9"):
            ops.region_pool(x, torch.full((1, 3, 3), 9), 4, True)
        with pytest.raises(IndexError, match=r"labels must lie in \[0, 4\), found 300"):
            ops.region_broadcast(torch.randn(1, 4, 2), torch.full((1, 2, 2), 300, dtype=torch.int32), 3, 3)
        with pytest.raises(TypeError, match="labels must be an integer tensor"):
            ops.region_pool(x, torch.zeros(1, 3, 3), 4, True)
        with pytest.raises(ValueError, match="codes must have 3 dimensions"):
            ops.region_broadcast(torch.randn(4, 2), torch.zeros(1, 2, 2, dtype=torch.long), 3, 3)
        with pytest.raises(ValueError, match="height and width must be positive, got 0 x 3"):
            ops.region_broadcast(torch.randn(1, 4, 2), torch.zeros(1, 2, 2, dtype=torch.long), 0, 3)
        with pytest.raises(ValueError, match="num_classes must lie in"):
            ops.region_pool(x, torch.zeros(1, 3, 3, dtype=torch.long), 0, True)


# The interpreter never compiles a kernel. Without a GPU, build the label families' Triton kernels
# (region, class_modulate, label_conv; they share semnorm/triton/_labels.py) for sm_90 in a fresh
# interpreter-free process: catches what only the compiler sees (types, loops, layouts).
_SM90_BUILD = r'''
import re, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from semnorm.triton import class_modulate, label_conv, region

FLOATS = {"scale_h", "scale_w", "off_hi", "off_lo"}
ALIGNED = {"HW", "W", "C", "pix_per_prog", "c_per_prog", "table_slot", "slot_stride", "sample_stride", "table_stride"}

def build(kernel, pointers, constexprs):
    sig = {a: "constexpr" if a in constexprs else pointers.get(a, "fp32" if a in FLOATS else "i32") for a in kernel.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(kernel.arg_names) if sig[a].startswith("*") or a in ALIGNED}
    compiled = triton.compile(ASTSource(kernel, sig, constexprs=constexprs, attrs=attrs), target=GPUTarget("cuda", 90, 32))
    assert re.search(r"(ld|st)\.global(\.\w+)*\.v[24]", compiled.asm["ptx"]), kernel.__name__  # vectorized streams

T = dict(BLOCK_P=512, BLOCK_C=8)
def acc(names, dt):
    return {n: "*" + dt for n in names}
build(region._region_pool_kernel, {"x_ptr": "*fp32", "lab_ptr": "*i64", "sums_ptr": "*fp32", "cnt_ptr": "*i64"}, dict(T, DETERMINISTIC=False, F64=False))
build(region._region_pool_kernel, {"x_ptr": "*fp64", "lab_ptr": "*u8", "sums_ptr": "*fp64", "cnt_ptr": "*i64"}, dict(T, DETERMINISTIC=True, F64=True))
build(region._region_broadcast_kernel, {"codes_ptr": "*bf16", "lab_ptr": "*i32", "out_ptr": "*bf16"}, T)
stats = ("mean_ptr", "rstd_ptr", "w_ptr", "b_ptr", "sg_ptr", "sb_ptr")
for xdt, adt, sg, sb, f64 in [("bf16", "fp32", True, True, False), ("fp64", "fp64", False, False, True)]:
    build(class_modulate._class_modulate_forward_kernel, acc(stats, adt) | {"x_ptr": "*" + xdt, "y_ptr": "*" + xdt, "lab_ptr": "*i64"},
          dict(T, HAS_SG=sg, HAS_SB=sb, F64=f64))
grads = stats + ("stat_ptr", "gw_ptr", "gb_ptr", "dsg_ptr", "dsb_ptr")
for xdt, adt, sg, sb, det, f64 in [("fp32", "fp32", True, True, False, False), ("bf16", "fp32", False, False, True, False),
                                   ("fp64", "fp64", False, True, True, True)]:
    build(class_modulate._class_modulate_backward_kernel,
          acc(grads, adt) | {n: "*" + xdt for n in ("x_ptr", "dy_ptr", "dx_ptr")} | {"lab_ptr": "*i64"},
          dict(T, HAS_SG=sg, HAS_SB=sb, DETERMINISTIC=det, F64=f64))
build(label_conv._label_tap_gather_forward_kernel, {"table_ptr": "*fp16", "lab_ptr": "*i64", "out_ptr": "*fp16"}, dict(T, F64=False))
build(label_conv._label_tap_gather_backward_kernel, {"grad_ptr": "*fp32", "lab_ptr": "*i64", "gt_ptr": "*fp32"}, dict(T, DETERMINISTIC=False, F64=False))
build(label_conv._label_tap_gather_backward_kernel, {"grad_ptr": "*fp64", "lab_ptr": "*u8", "gt_ptr": "*fp64"}, dict(T, DETERMINISTIC=True, F64=True))
print("compiled")
'''


@needs_triton
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the CUDA tests run the kernels themselves")
def test_triton_label_kernels_compile_for_sm90():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", _SM90_BUILD], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "compiled" in done.stdout, done.stdout + done.stderr
