"""CUDA kernels of the stats, semantic and positional families vs the reference (and the CPU kernels).

channel_moments / normalize_modulate (csrc/cuda/stats_kernel.cu), semantic_modulate /
candidate_combine (csrc/cuda/semantic_kernel.cu) and intra_class_positional
(csrc/cuda/positional_kernel.cu): forward and every gradient over dtypes x layouts x shapes (shapes
chosen to reach every code path: vectorized and scalar loads, split planes, several pixel tiles and
channel groups, K beyond the register kernels), determinism (bitwise equal reruns under
torch.use_deterministic_algorithms), bad input, opcheck and torch.compile(fullgraph=True) on CUDA.

Every test needs a GPU and a build with CUDA kernels, and skips otherwise. Setting
SEMNORM_CUDA_TEST_DEVICE=cpu runs the same tests against the CPU kernels (a check of the tests
themselves on a machine without a GPU).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as TF
from optest import DTYPES, LABEL_DTYPES, LAYOUTS, assert_close, make_x, needs_cuda, needs_ext

from semnorm import functional as F
from semnorm import reference
from semnorm.testing import natural_labels

DEV = os.environ.get("SEMNORM_CUDA_TEST_DEVICE", "cuda")
pytestmark = needs_cuda if DEV == "cuda" else needs_ext


def opmath(dtype):
    return reference.opmath_dtype(dtype)


def on_dev(t, layout="contiguous", requires_grad=None):
    """A copy of a CPU tensor on DEV in the given memory layout (same values), optionally a leaf."""
    rg = t.requires_grad if requires_grad is None else requires_grad
    t = t.detach().to(DEV)
    if layout == "channels_last" and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # a non-contiguous view: every other column of a wider tensor
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=DEV)
        wide[..., ::2] = t
        t = wide[..., ::2]
    return t.requires_grad_(rg)


def leaf(t):
    return t.detach().clone().requires_grad_()


class Deterministic:
    """Context manager: torch.use_deterministic_algorithms(True) inside, previous state after."""

    def __enter__(self):
        self.prev = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.prev)


def assert_bitwise(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b), f"not bitwise equal: max diff {(a.double() - b.double()).abs().max().item()}"


# =============================================================================================
# stats: channel_moments / normalize_modulate

# (2,3,5,7): scalar loads; (2,3,4,8): vec4; (1,2,128,128): few planes -> each plane split into
# several chunks (partial Welford states merged); (1,1,127,129): split planes on the scalar path,
# ragged chunks; (3,2,1,1): one pixel per plane.
STATS_SHAPES = [(2, 3, 5, 7), (2, 3, 4, 8), (1, 2, 128, 128), (1, 1, 127, 129), (3, 2, 1, 1)]
VARIANTS = ["plain", "blend", "noise", "blend_noise"]


def make_noise(x, requires_grad=False):
    n, c, h, w = x.shape
    acc = opmath(x.dtype)
    noise = torch.randn(n, h, w, dtype=acc)
    scale = torch.rand(c, dtype=acc) + 0.5
    return on_dev(noise, requires_grad=requires_grad), on_dev(scale, requires_grad=requires_grad)


def modulate_inputs(x, variant, layout="contiguous"):
    """(mean, rstd, kwargs) on DEV, all leaves requiring grad; dense maps in `layout`."""
    n, c = x.shape[:2]
    acc = opmath(x.dtype)
    mean = on_dev(torch.randn(n, c, dtype=acc), requires_grad=True)
    rstd = on_dev(torch.rand(n, c, dtype=acc) + 0.5, requires_grad=True)

    def dense():
        return on_dev(torch.randn(x.shape, dtype=torch.float64).to(x.dtype), layout, requires_grad=True)

    kw = {"gamma": dense(), "beta": dense()}
    if "blend" in variant:
        kw.update(gamma2=dense(), beta2=dense(), blend=on_dev(torch.tensor([0.3, 0.8], dtype=acc), requires_grad=True))
    if "noise" in variant:
        kw["noise"], kw["noise_scale"] = make_noise(x, requires_grad=True)
    return mean, rstd, kw


def call_modulate(x, mean, rstd, kw, impl, offset=1.0):
    kw = dict(kw)
    g, b = kw.pop("gamma"), kw.pop("beta")
    return F.normalize_modulate(x, mean, rstd, g, b, offset=offset, impl=impl, **kw)


def modulate_args(x, mean, rstd, kw, offset=0.5):
    return (x, mean, rstd, kw["gamma"], kw["beta"], kw.get("gamma2"), kw.get("beta2"), kw.get("blend"),
            kw.get("noise"), kw.get("noise_scale"), offset)


class TestStatsCuda:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("per_instance", [True, False])
    @pytest.mark.parametrize("noise", [False, True])
    @pytest.mark.parametrize("shape", STATS_SHAPES)
    def test_moments_forward_backward(self, dtype, layout, per_instance, noise, shape):
        x = on_dev(make_x(shape, dtype), layout, requires_grad=True)
        xr = leaf(x)
        nz, sc = make_noise(x, requires_grad=True) if noise else (None, None)
        nzr, scr = (leaf(nz), leaf(sc)) if noise else (None, None)
        mean, m2 = F.channel_moments(x, per_instance, nz, sc, impl="native")
        mr, m2r = F.channel_moments(xr, per_instance, nzr, scr, impl="reference")
        acc = opmath(dtype)
        assert mean.dtype == m2.dtype == acc and mean.device == x.device
        assert_close(mean, mr, acc)
        assert_close(m2, m2r, acc, scale=4)
        gm, gm2 = torch.randn_like(mean), torch.randn_like(m2)
        torch.autograd.backward((mean, m2), (gm, gm2))
        torch.autograd.backward((mr, m2r), (gm, gm2))
        assert x.grad.dtype == dtype
        assert_close(x.grad, xr.grad, dtype, scale=2)
        if noise:
            assert_close(sc.grad, scr.grad, acc, scale=10)
            assert_close(nz.grad, nzr.grad, acc, scale=4)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("variant", VARIANTS)
    @pytest.mark.parametrize("shape", STATS_SHAPES)
    def test_modulate_forward_backward(self, dtype, layout, variant, shape):
        x = on_dev(make_x(shape, dtype), layout, requires_grad=True)
        xr = leaf(x)
        mean, rstd, kw = modulate_inputs(x, variant, layout)
        mean_r, rstd_r, kw_r = leaf(mean), leaf(rstd), {k: leaf(v) for k, v in kw.items()}
        y = call_modulate(x, mean, rstd, kw, "native", offset=0.7)
        yr = call_modulate(xr, mean_r, rstd_r, kw_r, "reference", offset=0.7)
        assert y.dtype == dtype and y.is_contiguous() and y.device == x.device
        assert_close(y, yr, dtype)
        gy = torch.randn_like(y)
        y.backward(gy)
        yr.backward(gy)
        assert_close(x.grad, xr.grad, dtype)
        assert_close(mean.grad, mean_r.grad, opmath(dtype), scale=10)
        assert_close(rstd.grad, rstd_r.grad, opmath(dtype), scale=10)
        for k in kw:
            assert_close(kw[k].grad, kw_r[k].grad, kw[k].dtype, scale=10, msg=k)

    @pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 128, 128)])
    def test_matches_cpu_kernels(self, shape):
        x = make_x(shape, torch.float32) * 2 + 1
        noise, scale = torch.randn(shape[0], *shape[2:]), torch.rand(shape[1]) + 0.5
        for pi in (True, False):
            for a, b in zip(F.channel_moments(on_dev(x), pi, on_dev(noise), on_dev(scale), impl="native"),
                            F.channel_moments(x, pi, noise, scale, impl="native")):
                assert_close(a.cpu(), b, scale=4)
        mean, rstd = torch.randn(shape[:2]), torch.rand(shape[:2]) + 0.5
        g, b, gy = torch.randn(shape), torch.randn(shape), torch.randn(shape)
        args = (x, mean, rstd, g, b, g.flip(-1), b.flip(-1), torch.tensor([0.2, 0.6]), noise, scale, 0.5)
        dev_args = tuple(on_dev(a) if isinstance(a, torch.Tensor) else a for a in args)
        ops = torch.ops.semnorm
        assert_close(ops.normalize_modulate(*dev_args).cpu(), ops.normalize_modulate(*args))
        for a, b in zip(ops.normalize_modulate_backward(on_dev(gy), *dev_args), ops.normalize_modulate_backward(gy, *args)):
            assert_close(a.cpu(), b, scale=10)

    def test_norm_chain_matches_torch(self):
        x = on_dev(torch.randn(3, 4, 9, 12) * 2 + 1, requires_grad=True)
        xr = leaf(x)
        zeros = torch.zeros_like(x)
        for norm, exp in (("batch", TF.batch_norm(xr, None, None, training=True)), ("instance", TF.instance_norm(xr))):
            mean, rstd = F.norm_stats(x, norm, impl="native")
            y = F.normalize_modulate(x, mean, rstd, zeros, zeros, impl="native")
            assert_close(y, exp, scale=2)
            gy = torch.randn_like(y)
            gx, = torch.autograd.grad(y, x, gy)
            gxr, = torch.autograd.grad(exp, xr, gy)
            assert_close(gx, gxr, scale=4)

    @pytest.mark.parametrize("per_instance", [True, False])
    def test_large_mean_no_cancellation(self, per_instance):
        x = 1000 + torch.randn(4, 3, 32, 32)
        mean, m2 = F.channel_moments(on_dev(x), per_instance, impl="native")
        exp_mean, exp_m2 = reference.channel_moments(x.double(), per_instance)
        torch.testing.assert_close(m2.double().cpu(), exp_m2, rtol=1e-5, atol=0)
        torch.testing.assert_close(mean.double().cpu(), exp_mean, rtol=3e-7, atol=0)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_low_precision_statistics_in_float32(self, dtype):
        x = (torch.randn(4, 3, 16, 16) * 3 + 20).to(dtype)
        for pi in (True, False):
            mean, m2 = F.channel_moments(on_dev(x), pi, impl="native")
            exp_mean, exp_m2 = reference.channel_moments(x.double(), pi)
            assert mean.dtype == torch.float32
            torch.testing.assert_close(mean.double().cpu(), exp_mean, rtol=1e-6, atol=1e-5)
            torch.testing.assert_close(m2.double().cpu(), exp_m2, rtol=1e-5, atol=1e-4)

    def test_deterministic_bitwise(self):
        # No floating-point atomics: reruns are bitwise equal, in deterministic mode or not.
        x = on_dev(torch.randn(2, 3, 64, 64) + 3)
        mean, rstd, kw = modulate_inputs(x, "blend_noise")
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in modulate_args(x, mean, rstd, kw))
        gy = torch.randn_like(x)
        ops = torch.ops.semnorm

        def run():
            return [*ops.channel_moments(x, True, args[8], args[9]), *ops.channel_moments(x, False, args[8], args[9]),
                    *ops.channel_moments_backward(args[1], args[2], x, args[1], True, args[8], args[9]),
                    ops.normalize_modulate(*args), *ops.normalize_modulate_backward(gy, *args)]

        fast = run()
        with Deterministic():
            first, second = run(), run()
        for a, b, c in zip(first, second, fast):
            assert_bitwise(a, b)
            assert_close(a, c)

    def test_gradcheck_float64(self):
        x = on_dev(torch.randn(2, 3, 4, 5, dtype=torch.float64), requires_grad=True)
        noise, scale = make_noise(x, requires_grad=True)
        for pi in (True, False):
            assert torch.autograd.gradcheck(
                lambda x, noise, scale: F.channel_moments(x, pi, noise, scale, impl="native"), (x, noise, scale)
            )
        mean, rstd, kw = modulate_inputs(x, "blend_noise")
        keys = list(kw)

        def f(x, mean, rstd, *vals):
            return call_modulate(x, mean, rstd, dict(zip(keys, vals)), "native", offset=0.5)

        assert torch.autograd.gradcheck(f, (x, mean, rstd, *kw.values()))

    @pytest.mark.parametrize("variant", VARIANTS)
    def test_opcheck(self, variant):
        x = on_dev(torch.randn(2, 3, 4, 8), requires_grad=True)
        nz, sc = make_noise(x, requires_grad=True) if "noise" in variant else (None, None)
        for pi in (True, False):
            torch.library.opcheck(torch.ops.semnorm.channel_moments.default, (x, pi, nz, sc))
            with torch.no_grad():
                mean, _ = torch.ops.semnorm.channel_moments(x, pi, nz, sc)
            g = torch.randn_like(mean)
            torch.library.opcheck(
                torch.ops.semnorm.channel_moments_backward.default,
                (g, g.clone(), x.detach(), mean, pi, None if nz is None else nz.detach(), None if sc is None else sc.detach()),
            )
        mean, rstd, kw = modulate_inputs(x, variant)
        args = modulate_args(x, mean, rstd, kw)
        torch.library.opcheck(torch.ops.semnorm.normalize_modulate.default, args)
        detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(torch.ops.semnorm.normalize_modulate_backward.default, (torch.randn_like(x), *detached))

    def test_compile_fullgraph(self):
        def f(x, gamma, beta, noise, scale):
            mean, rstd = F.norm_stats(x, "batch", noise=noise, noise_scale=scale, impl="native")
            return F.normalize_modulate(x, mean, rstd, gamma, beta, noise=noise, noise_scale=scale, impl="native")

        x = on_dev(torch.randn(2, 3, 8, 8), requires_grad=True)
        gamma, beta = on_dev(torch.randn(2, 3, 8, 8), requires_grad=True), on_dev(torch.randn(2, 3, 8, 8), requires_grad=True)
        noise, scale = make_noise(x, requires_grad=True)
        args = (x, gamma, beta, noise, scale)
        out = torch.compile(f, fullgraph=True)(*args)
        ref = f(*args)
        assert_close(out, ref)
        for a, b in zip(torch.autograd.grad(out.square().sum(), args), torch.autograd.grad(ref.square().sum(), args)):
            assert_close(a, b, scale=4)

    def test_kernel_checks_itself(self):
        x = on_dev(torch.randn(2, 3, 4, 4))
        mean, rstd = on_dev(torch.zeros(2, 3)), on_dev(torch.ones(2, 3))
        g = torch.zeros_like(x)
        ops = torch.ops.semnorm
        with pytest.raises(RuntimeError, match="semnorm.channel_moments: x must have 4 dimensions"):
            ops.channel_moments(x[0], True)
        with pytest.raises(RuntimeError, match="semnorm.channel_moments: noise and noise_scale must be given together"):
            ops.channel_moments(x, True, on_dev(torch.randn(2, 4, 4)))
        with pytest.raises(RuntimeError, match="semnorm.normalize_modulate: rstd must have dtype"):
            ops.normalize_modulate(x, mean, rstd.double(), g, g)
        with pytest.raises(RuntimeError, match="semnorm.normalize_modulate: blend must have shape"):
            ops.normalize_modulate(x, mean, rstd, g, g, g, g, on_dev(torch.ones(3)))
        with pytest.raises(RuntimeError, match="semnorm.normalize_modulate_backward: grad_y must have shape"):
            ops.normalize_modulate_backward(g[:1], x, mean, rstd, g, g, None, None, None, None, None, 1.0)
        if DEV == "cuda":
            with pytest.raises(RuntimeError, match="semnorm.normalize_modulate: x is on cuda:0 but mean is on cpu"):
                ops.normalize_modulate(x, mean.cpu(), rstd, g, g)
        ops.normalize_modulate(x, mean, rstd, g, g)  # still usable after the errors


# =============================================================================================
# semantic: semantic_modulate (SCN) / candidate_combine (SCC)

# K: register kernels for K <= 8, <= 16, <= 32 (1 and 9 leave padded table rows); 40 takes the
# composite (matmul) fallback.
SCN_KS = [1, 4, 9, 16, 32, 40]
# (9,7): scalar loads; (8,8): vec4; (1,1), (1,6): tiny planes; (40,40): two pixel tiles and
# several channel groups (partial grad_vectors summed over groups).
SCN_SIZES = [(9, 7), (8, 8), (1, 1), (1, 6), (40, 40)]


def make_scn(n, c, h, w, k, dtype=torch.float32, layout="contiguous"):
    """x, mean, rstd, vectors (a softmax), bank on DEV, all leaves requiring grad."""
    acc = opmath(dtype)
    x = make_x((n, c, h, w), dtype)
    mean = x.to(acc).mean((2, 3)) + 0.1 * torch.randn(n, c, dtype=acc)
    rstd = torch.rand(n, c, dtype=acc) + 0.5
    vectors = torch.softmax(torch.randn(n, k, h, w, dtype=torch.float64) * 3, 1).to(dtype)
    bank = torch.randn(k, 2 * c, dtype=acc)
    return (on_dev(x, layout, True), on_dev(mean, requires_grad=True), on_dev(rstd, requires_grad=True),
            on_dev(vectors, layout, True), on_dev(bank, requires_grad=True))


def make_scc(n, k, c, h, w, dtype=torch.float32, layout="contiguous"):
    vectors = torch.softmax(torch.randn(n, k, h, w, dtype=torch.float64), 1).to(dtype)
    cand = torch.randn(n, k, c, h, w, dtype=torch.float64).to(dtype)
    vectors = on_dev(vectors, layout, True)
    if layout == "channels_last":  # channels innermost: a permuted view of an (N, K, H, W, C) tensor
        cand = cand.to(DEV).permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3).requires_grad_()
    else:
        cand = on_dev(cand, layout, True)
    return vectors, cand


def check_grads(ins, ref_ins, dtype, scale, names):
    for name, a, b in zip(names, ins, ref_ins):
        assert a.grad is not None and a.grad.dtype == a.dtype, name
        assert_close(a.grad, b.grad, dtype, scale=scale, msg=lambda m, name=name: f"grad_{name}: {m}")


class TestSemanticCuda:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("k", SCN_KS)
    @pytest.mark.parametrize("offset", [0.0, 1.0])
    def test_forward_backward(self, dtype, layout, k, offset):
        for size in ((9, 7), (8, 8)):
            ins = make_scn(2, 5, *size, k, dtype, layout)
            ref_ins = [leaf(t) for t in ins]
            y = F.semantic_modulate(*ins, offset=offset, impl="native")
            yr = F.semantic_modulate(*ref_ins, offset=offset, impl="reference")
            assert y.dtype == dtype and y.is_contiguous()
            assert_close(y, yr, dtype, scale=2)
            g = torch.randn_like(yr)
            y.backward(g)
            yr.backward(g)
            check_grads(ins, ref_ins, dtype, 4, ("x", "mean", "rstd", "vectors", "bank"))

    @pytest.mark.parametrize("size", SCN_SIZES)
    @pytest.mark.parametrize("k", SCN_KS)
    def test_sizes_float64(self, size, k):
        ins = make_scn(3, 6, *size, k, torch.float64)
        ref_ins = [leaf(t) for t in ins]
        y = F.semantic_modulate(*ins, offset=0.5, impl="native")
        yr = F.semantic_modulate(*ref_ins, offset=0.5, impl="reference")
        assert_close(y, yr)
        g = torch.randn_like(yr)
        y.backward(g)
        yr.backward(g)
        check_grads(ins, ref_ins, torch.float64, 1, ("x", "mean", "rstd", "vectors", "bank"))

    @pytest.mark.parametrize("k", [4, 16, 32])
    def test_many_tiles_one_group(self, k):
        # Enough (n, tile) blocks for one channel group on any GPU: grad_vectors written directly, the
        # bank gradient summed over hundreds of partial slots.
        ins = make_scn(4, 3, 256, 300, k)
        ref_ins = [leaf(t) for t in ins]
        y = F.semantic_modulate(*ins, impl="native")
        yr = F.semantic_modulate(*ref_ins, impl="reference")
        assert_close(y, yr)
        g = torch.randn_like(yr)
        y.backward(g)
        yr.backward(g)
        check_grads(ins, ref_ins, torch.float32, 50, ("x", "mean", "rstd", "vectors", "bank"))

    def test_matches_cpu_kernel(self):
        ins = [t.detach() for t in make_scn(2, 7, 13, 11, 6)]
        gy = torch.randn(2, 7, 13, 11)
        ops = torch.ops.semnorm
        assert_close(ops.semantic_modulate(*ins, 1.0).cpu(), ops.semantic_modulate(*[t.cpu() for t in ins], 1.0))
        for a, b in zip(ops.semantic_modulate_backward(on_dev(gy), *ins, 1.0),
                        ops.semantic_modulate_backward(gy, *[t.cpu() for t in ins], 1.0)):
            assert_close(a.cpu(), b, scale=4)

    @pytest.mark.parametrize("k", [3, 16, 32])
    def test_deterministic_bitwise(self, k):
        ins = [t.detach() for t in make_scn(2, 6, 40, 40, k)]
        gy = on_dev(torch.randn(2, 6, 40, 40))
        vc, cand = (t.detach() for t in make_scc(2, k, 6, 40, 40))
        ops = torch.ops.semnorm

        def run():
            return [ops.semantic_modulate(*ins, 1.0), *ops.semantic_modulate_backward(gy, *ins, 1.0),
                    ops.candidate_combine(vc, cand), *ops.candidate_combine_backward(gy, vc, cand)]

        fast = run()
        with Deterministic():
            first, second = run(), run()
        for a, b, c in zip(first, second, fast):
            assert_bitwise(a, b)
            assert_close(a, c)

    def test_gradcheck_float64(self):
        for offset in (0.0, 1.0):
            ins = make_scn(2, 2, 3, 3, 2, torch.float64)
            assert torch.autograd.gradcheck(lambda *t: F.semantic_modulate(*t, offset=offset, impl="native"), ins)

    def test_opcheck(self):
        ins = make_scn(2, 3, 6, 8, 4)
        torch.library.opcheck(torch.ops.semnorm.semantic_modulate.default, (*ins, 1.0))
        torch.library.opcheck(torch.ops.semnorm.semantic_modulate.default, (*make_scn(1, 2, 1, 1, 1), 0.0))
        g = on_dev(torch.randn(2, 3, 6, 8))
        torch.library.opcheck(torch.ops.semnorm.semantic_modulate_backward.default, (g, *[t.detach() for t in ins], 1.0))

    def test_compile_fullgraph(self):
        def f(x, vectors, bank):
            var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
            n = x.shape[0]
            rstd = torch.rsqrt(var + 1e-5)
            return F.semantic_modulate(x, mean.expand(n, -1), rstd.expand(n, -1), vectors, bank, impl="native") * 2

        x, _, _, vectors, bank = make_scn(2, 4, 8, 8, 3)
        out = torch.compile(f, fullgraph=True)(x, vectors, bank)
        ref = f(x, vectors, bank)
        assert_close(out, ref)
        for a, b in zip(torch.autograd.grad(out.sum(), (x, vectors, bank)),
                        torch.autograd.grad(ref.sum(), (x, vectors, bank))):
            assert_close(a, b, scale=4)

    def test_kernel_checks_itself(self):
        x, mean, rstd, v, bank = (t.detach() for t in make_scn(2, 3, 4, 5, 4))
        ops = torch.ops.semnorm
        with pytest.raises(RuntimeError, match=r"semantic_modulate: bank must have shape \[4, 6\], got \[4, 8\]"):
            ops.semantic_modulate(x, mean, rstd, v, on_dev(torch.randn(4, 8)), 1.0)
        with pytest.raises(RuntimeError, match="semantic_modulate: rstd must have dtype Float"):
            ops.semantic_modulate(x, mean, rstd.double(), v, bank, 1.0)
        with pytest.raises(RuntimeError, match="semantic_modulate_backward: grad_y must have shape"):
            ops.semantic_modulate_backward(x[:1], x, mean, rstd, v, bank, 1.0)
        vv, cand = (t.detach() for t in make_scc(2, 3, 4, 5, 6))
        with pytest.raises(RuntimeError, match=r"candidate_combine: candidates must have shape \[2, 3, 4, 5, 6\]"):
            ops.candidate_combine(vv, cand[:, :, :, :4])
        with pytest.raises(RuntimeError, match="candidate_combine_backward: grad_y must have shape"):
            ops.candidate_combine_backward(on_dev(torch.randn(2, 5, 5, 6)), vv, cand)
        if DEV == "cuda":
            with pytest.raises(RuntimeError, match="semantic_modulate: x is on cuda:0 but bank is on cpu"):
                ops.semantic_modulate(x, mean, rstd, v, bank.cpu(), 1.0)
        ops.semantic_modulate(x, mean, rstd, v, bank, 1.0)


class TestCandidateCombineCuda:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("k", [1, 3])
    @pytest.mark.parametrize("size", [(9, 7), (8, 8)])
    def test_forward_backward(self, dtype, layout, k, size):
        ins = make_scc(2, k, 5, *size, dtype, layout)
        ref_ins = [leaf(t) for t in ins]
        y = F.candidate_combine(*ins, impl="native")
        yr = F.candidate_combine(*ref_ins, impl="reference")
        assert y.dtype == dtype and y.is_contiguous() and y.shape == (2, 5, *size)
        assert_close(y, yr, dtype)
        g = torch.randn_like(yr)
        y.backward(g)
        yr.backward(g)
        check_grads(ins, ref_ins, dtype, 2, ("vectors", "candidates"))

    @pytest.mark.parametrize("shape", [(3, 4, 4, 1, 1), (3, 4, 4, 33, 17), (1, 2, 64, 2, 300), (4, 3, 8, 128, 128)])
    def test_sizes_float64(self, shape):
        # (n, k, c, h, w): 1x1, odd, few planes (channel groups with partial grad_vectors), large.
        ins = make_scc(*shape, torch.float64)
        ref_ins = [leaf(t) for t in ins]
        y = F.candidate_combine(*ins, impl="native")
        yr = F.candidate_combine(*ref_ins, impl="reference")
        assert_close(y, yr)
        g = torch.randn_like(yr)
        y.backward(g)
        yr.backward(g)
        check_grads(ins, ref_ins, torch.float64, 1, ("vectors", "candidates"))

    def test_gradcheck_float64(self):
        ins = make_scc(2, 3, 2, 3, 4, torch.float64)
        assert torch.autograd.gradcheck(lambda *t: F.candidate_combine(*t, impl="native"), ins)

    def test_opcheck(self):
        ins = make_scc(2, 3, 4, 5, 8)
        torch.library.opcheck(torch.ops.semnorm.candidate_combine.default, tuple(ins))
        torch.library.opcheck(torch.ops.semnorm.candidate_combine.default, tuple(make_scc(1, 1, 1, 1, 1)))
        g = on_dev(torch.randn(2, 4, 5, 8))
        torch.library.opcheck(torch.ops.semnorm.candidate_combine_backward.default, (g, *[t.detach() for t in ins]))

    def test_compile_fullgraph(self):
        def f(logits, cand):
            return F.candidate_combine(F.semantic_vectors(logits, 0.5), cand, impl="native").square()

        logits = on_dev(torch.randn(2, 3, 6, 8), requires_grad=True)
        cand = on_dev(torch.randn(2, 3, 4, 6, 8), requires_grad=True)
        out = torch.compile(f, fullgraph=True)(logits, cand)
        ref = f(logits, cand)
        assert_close(out, ref)
        for a, b in zip(torch.autograd.grad(out.sum(), (logits, cand)), torch.autograd.grad(ref.sum(), (logits, cand))):
            assert_close(a, b)


# =============================================================================================
# positional: intra_class_positional (CLADE-ICPE)


def _checker(n, h, w):
    return ((torch.arange(h).view(h, 1) + torch.arange(w).view(1, w)) % 2).expand(n, h, w).contiguous()


def _diagonals(n, h, w):
    return ((torch.arange(h).view(h, 1) + torch.arange(w).view(1, w)) % 3).expand(n, h, w).contiguous()


def _staircase(n, h, w):
    lab = torch.zeros(n, h, w, dtype=torch.int64)
    idx = torch.arange(min(h, w))
    lab[:, idx, idx] = 1
    return lab


def _snake(n, h, w):
    lab = torch.zeros(n, h, w, dtype=torch.int64)
    lab[:, ::2, :] = 1
    lab[:, 1::4, -1] = 1
    lab[:, 3::4, 0] = 1
    return lab


POS_CASES = {
    "natural": lambda n, h, w: natural_labels(n, h, w, 9, classes_per_image=4),
    "random": lambda n, h, w: torch.randint(0, 3, (n, h, w)),
    "one_label": lambda n, h, w: torch.full((n, h, w), 4, dtype=torch.int64),
    "every_label": lambda n, h, w: torch.arange(n * h * w).view(n, h, w),
    "checkerboard": _checker,
    "diagonals": _diagonals,
    "staircase": _staircase,
    "snake": _snake,
    "large_values": lambda n, h, w: torch.randint(0, 2, (n, h, w)) * (2**40) + 7,
}
POS_SIZES = [(1, 1), (1, 7), (6, 1), (5, 3), (8, 8), (9, 13), (64, 96)]


def positional_pair(labels, ignore_label=-1, eps=1e-5):
    """(D from the device kernel, moved to the CPU; D from the CPU kernel)."""
    d = F.intra_class_positional(on_dev(labels), ignore_label, eps, impl="native")
    assert d.device.type == torch.device(DEV).type and d.dtype == torch.float32 and d.is_contiguous()
    return d.cpu(), F.intra_class_positional(labels, ignore_label, eps, impl="native")


class TestPositionalCuda:
    @pytest.mark.parametrize("case", list(POS_CASES))
    @pytest.mark.parametrize("size", POS_SIZES)
    def test_label_cases_match_cpu_bitwise(self, case, size):
        labels = POS_CASES[case](3, *size)
        d, d_cpu = positional_pair(labels)
        assert_bitwise(d, d_cpu)  # the CPU kernel's float64 arithmetic, in the same order
        torch.testing.assert_close(d, reference.intra_class_positional(labels), rtol=1e-5, atol=1e-6)

    @pytest.mark.parametrize("case", ["natural", "one_label", "snake", "random", "checkerboard"])
    def test_large_images(self, case):
        # Long propagation chains (snake), one huge component (one_label), many tiny ones (random).
        labels = POS_CASES[case](2, 256, 256)
        d, d_cpu = positional_pair(labels)
        assert_bitwise(d, d_cpu)

    @pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
    @pytest.mark.parametrize("ignore_label", [-1, 0, 3, 200])
    def test_dtypes_and_ignore_label(self, label_dtype, ignore_label):
        labels = natural_labels(2, 11, 14, 6, classes_per_image=4).to(label_dtype)
        d, d_cpu = positional_pair(labels, ignore_label)
        assert_bitwise(d, d_cpu)
        if ignore_label >= 0:
            assert torch.all(d[(labels == ignore_label).unsqueeze(1).expand_as(d)] == 0)

    def test_strided_labels(self):
        wide = natural_labels(2, 9, 20, 5, classes_per_image=3)
        labels = on_dev(wide)[:, :, ::2]
        assert not labels.is_contiguous()
        d = F.intra_class_positional(labels, impl="native")
        assert_bitwise(d.cpu(), F.intra_class_positional(wide[:, :, ::2].contiguous(), impl="native"))

    @pytest.mark.parametrize("eps", [0.0, 1e-5, 0.5])
    def test_eps(self, eps):
        labels = POS_CASES["random"](2, 7, 9)
        d, d_cpu = positional_pair(labels, eps=eps)
        assert torch.isfinite(d).all()
        assert_bitwise(d, d_cpu)

    def test_deterministic_bitwise(self):
        labels = on_dev(natural_labels(2, 64, 64, 7, classes_per_image=5))
        fast = F.intra_class_positional(labels, impl="native")
        with Deterministic():
            first = F.intra_class_positional(labels, impl="native")
            second = F.intra_class_positional(labels, impl="native")
        assert_bitwise(first, second)
        assert_bitwise(first, fast)

    def test_negative_label_raises_and_next_call_works(self):
        op = torch.ops.semnorm.intra_class_positional
        bad = torch.zeros(2, 3, 3, dtype=torch.int32)
        bad[1, 2, 1] = -7
        bad[1, 2, 2] = -9
        with pytest.raises(ValueError, match="labels must be non-negative, found -7 at flat index 16"):
            op(on_dev(bad))
        with pytest.raises(ValueError, match="labels must be non-negative, found -1"):
            F.intra_class_positional(on_dev(torch.full((1, 4, 4), -1)), impl="native")
        good = natural_labels(2, 8, 8, 4, classes_per_image=3)
        d, d_cpu = positional_pair(good)  # the context is not poisoned
        assert_bitwise(d, d_cpu)

    def test_kernel_checks_itself(self):
        op = torch.ops.semnorm.intra_class_positional
        with pytest.raises(RuntimeError, match="labels must be an integer tensor"):
            op(on_dev(torch.zeros(1, 3, 3)))
        with pytest.raises(RuntimeError, match="labels must have 3 dimensions"):
            op(on_dev(torch.zeros(3, 3, dtype=torch.int64)))
        with pytest.raises(RuntimeError, match="labels must not be empty"):
            op(on_dev(torch.zeros(1, 0, 3, dtype=torch.int64)))
        with pytest.raises(ValueError, match="eps must be finite and non-negative"):
            op(on_dev(torch.zeros(1, 3, 3, dtype=torch.int64)), -1, float("nan"))

    def test_opcheck(self):
        labels = on_dev(natural_labels(2, 7, 9, 5, classes_per_image=3))
        torch.library.opcheck(torch.ops.semnorm.intra_class_positional.default, (labels, -1, 1e-5))
        torch.library.opcheck(torch.ops.semnorm.intra_class_positional.default, (labels.to(torch.uint8), 2, 0.0))

    def test_compile_fullgraph(self):
        def f(labels, x):
            d = F.intra_class_positional(labels, ignore_label=0, impl="native")
            return x * (1 + d.sum(1, keepdim=True))

        labels = on_dev(natural_labels(2, 12, 10, 5, classes_per_image=3))
        x = on_dev(torch.randn(2, 3, 12, 10))
        out = torch.compile(f, fullgraph=True)(labels, x)
        assert_close(out, f(labels, x))
