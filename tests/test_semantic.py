"""semantic_modulate (SCN) / candidate_combine (SCC): native kernels vs reference vs naive loops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st
from optest import DEVICES, DTYPES, KERNEL_IMPLS, LAYOUTS, assert_close, make_x, needs_triton

import semnorm
from semnorm import functional as F
from semnorm import reference

# x spatial sizes: square, odd, 1x1, a single row
SIZES = [(8, 8), (7, 9), (5, 3), (1, 1), (1, 6)]


def opmath(dtype):
    return reference.opmath_dtype(dtype)


def make_scn(n, c, h, w, k, dtype=torch.float32, layout="contiguous", requires_grad=False):
    """x, mean, rstd (per-instance statistics of x), vectors (a softmax), bank (random, not zero)."""
    acc = opmath(dtype)
    x = make_x((n, c, h, w), dtype, layout)
    mean = (x.to(acc).mean((2, 3)) + 0.1 * torch.randn(n, c, dtype=acc)).detach()
    rstd = (torch.rand(n, c, dtype=acc) + 0.5).detach()
    logits = torch.randn(n, k, h, w, dtype=torch.float64) * 20
    vectors = F.semantic_vectors(logits).to(dtype)
    if layout == "channels_last":
        vectors = vectors.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        vectors = torch.cat([vectors, vectors], dim=1)[:, ::2]
    bank = torch.randn(k, 2 * c, dtype=acc)
    return [t.requires_grad_(requires_grad) for t in (x, mean, rstd, vectors, bank)]


def make_scc(n, k, c, h, w, dtype=torch.float32, layout="contiguous", requires_grad=False):
    vectors = torch.softmax(torch.randn(n, k, h, w, dtype=torch.float64), 1).to(dtype)
    cand = torch.randn(n, k, c, h, w, dtype=torch.float64).to(dtype)
    if layout == "channels_last":  # channels innermost: a permuted view of an (N, K, H, W, C) tensor
        vectors = vectors.contiguous(memory_format=torch.channels_last)
        cand = cand.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    elif layout == "strided":
        vectors = make_x(vectors.shape, dtype, "strided").copy_(vectors)
        wide = torch.zeros(n, k, c, h, 2 * w, dtype=dtype)
        wide[..., ::2] = cand
        cand = wide[..., ::2]
    return vectors.requires_grad_(requires_grad), cand.requires_grad_(requires_grad)


def clones(ts):
    return [t.detach().clone().requires_grad_() for t in ts]


def check_against_reference(op, impl, ins, names, dtype=None, grad_scale=1.0, **kw):
    """``F.<op>`` by ``impl`` vs the reference on clones of ``ins``: the outputs, then, for one random
    output gradient, the gradient of every input (``names``: the inputs, for the messages). Returns the
    kernel's output for further checks."""
    fn = getattr(F, op)
    ref_ins = clones(ins)
    y = fn(*ins, **kw, impl=impl)
    yr = fn(*ref_ins, **kw, impl="reference")
    assert_close(y, yr, dtype)
    g = torch.randn_like(yr)
    y.backward(g)
    yr.backward(g)
    for name, a, b in zip(names, ins, ref_ins, strict=True):
        assert a.grad.dtype == a.dtype, name
        assert_close(a.grad, b.grad, dtype, scale=grad_scale, msg=lambda m: f"grad_{name}: {m}")
    return y


SCN_INPUTS = ("x", "mean", "rstd", "vectors", "bank")
SCC_INPUTS = ("vectors", "candidates")


def dense(t):
    """True when t's elements fill its storage span without gaps or overlaps, in some dimension order."""
    expected = 1
    for d in sorted(range(t.dim()), key=t.stride):
        if t.shape[d] != 1 and t.stride(d) != expected:
            return False
        expected *= t.shape[d]
    return True


def on(device, t):
    """``t`` on ``device`` as a fresh leaf with t's requires_grad and memory layout.

    ``Tensor.to`` makes a non-dense view (the "strided" layout) contiguous on another device, so such
    a view is rebuilt there as every other column of a wider tensor.
    """
    src = t.detach()
    if src.device.type != device:
        if dense(src):  # .to keeps the strides of dense tensors (channels_last, permuted views)
            src = src.to(device)
        else:
            wide = torch.zeros(*src.shape[:-1], 2 * src.shape[-1], dtype=src.dtype, device=device)
            wide[..., ::2] = src
            src = wide[..., ::2]
    return src.requires_grad_(t.requires_grad)


def on_all(device, ts):
    return [on(device, t) for t in ts]


class DeterministicAlgorithms:
    def __enter__(self):
        self.before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.before)


def ops_of(impl):
    return semnorm._extension.op_namespace(impl)


def trim(impl, keep):
    """Skip the Triton run of a grid point unless ``keep`` (the interpreter runs ~1 ms per program)."""
    if impl == "triton" and not keep:
        pytest.skip("trimmed for the Triton interpreter (the other grid points cover this one)")


def naive_semantic_modulate(x, mean, rstd, vectors, bank, offset):
    """Loop over K and channels in float64; the oracle of the reference."""
    n, c, h, w = x.shape
    y = torch.empty(n, c, h, w, dtype=torch.float64)
    for ch in range(c):
        gamma = sum(vectors[:, k].double() * bank[k, ch].double() for k in range(bank.shape[0]))
        beta = sum(vectors[:, k].double() * bank[k, c + ch].double() for k in range(bank.shape[0]))
        xhat = (x[:, ch].double() - mean[:, ch, None, None].double()) * rstd[:, ch, None, None].double()
        y[:, ch] = xhat * (offset + gamma) + beta
    return y


def published_scn(x, vectors, bank, eps=1e-5):
    """SC-GAN's formulation: batch norm (no affine), [gamma; beta] from a matmul of the vectors with the
    bank (K, 2C), split and permuted back to NCHW, then N(x) * (1 + gamma) + beta."""
    c = x.shape[1]
    params = torch.matmul(vectors.permute(0, 2, 3, 1), bank)  # (N, H, W, 2C)
    gamma, beta = params.split(c, dim=-1)
    gamma, beta = gamma.permute(0, 3, 1, 2), beta.permute(0, 3, 1, 2)
    return TF.batch_norm(x, None, None, training=True, eps=eps) * (1 + gamma) + beta


def batch_stats(x, eps=1e-5):
    """Batch statistics expanded over N, as the (N, C) tables the op takes."""
    var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    rstd = torch.rsqrt(var + eps)
    n = x.shape[0]
    return mean.expand(n, -1), rstd.expand(n, -1)


# ---- reference


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_reference_matches_naive_loop(size, k, offset):
    x, mean, rstd, vectors, bank = make_scn(2, 3, *size, k, torch.float64)
    out = reference.semantic_modulate(x, mean, rstd, vectors, bank, offset)
    torch.testing.assert_close(out, naive_semantic_modulate(x, mean, rstd, vectors, bank, offset))
    vectors, cand = make_scc(2, k, 3, *size, torch.float64)
    naive = sum(vectors[:, j, None] * cand[:, j] for j in range(k))
    torch.testing.assert_close(reference.candidate_combine(vectors, cand), naive)


def test_reference_matches_published_formulation():
    x = torch.randn(3, 6, 7, 5, dtype=torch.float64, requires_grad=True)
    vectors = F.semantic_vectors(torch.randn(3, 4, 7, 5, dtype=torch.float64) * 30).requires_grad_()
    bank = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    expected = published_scn(x, vectors, bank)
    mean, rstd = batch_stats(x)
    out = reference.semantic_modulate(x, mean, rstd, vectors, bank, 1.0)
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(out)
    ge = torch.autograd.grad(expected, (x, vectors, bank), g)
    go = torch.autograd.grad(out, (x, vectors, bank), g)
    for a, b in zip(go, ge):
        torch.testing.assert_close(a, b)


def test_semantic_vectors():
    logits = torch.randn(2, 5, 4, 3)
    v = F.semantic_vectors(logits, 0.5)
    torch.testing.assert_close(v, torch.softmax(0.5 * logits, 1))
    torch.testing.assert_close(v.sum(1), torch.ones(2, 4, 3))
    half = F.semantic_vectors(logits.half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), torch.softmax(0.05 * logits.half().float(), 1), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="logits must have 4 dimensions"):
        F.semantic_vectors(logits[0])


def test_reference_gradcheck_float64():
    ins = make_scn(2, 3, 4, 3, 3, torch.float64, requires_grad=True)
    for offset in (0.0, 1.0):
        assert torch.autograd.gradcheck(lambda *t: reference.semantic_modulate(*t, offset), ins)
    assert torch.autograd.gradcheck(reference.candidate_combine, make_scc(2, 3, 2, 3, 4, torch.float64, requires_grad=True))


# ---- kernels (native C++/CUDA and Triton) vs reference, on each device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", KERNEL_IMPLS)
class TestSemanticModulateKernels:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("k", [1, 4])
    @pytest.mark.parametrize("offset", [0.0, 1.0])
    def test_forward_backward(self, impl, device, dtype, layout, k, offset):
        trim(impl, (k == 4) == (offset == 1.0))
        ins = on_all(device, make_scn(2, 5, 9, 7, k, dtype, layout, requires_grad=True))
        # grad_scale=4: float32 parameter gradients sum low-precision products over many pixels
        y = check_against_reference("semantic_modulate", impl, ins, SCN_INPUTS, dtype, grad_scale=4,
                                    offset=offset)
        assert y.dtype == dtype and y.is_contiguous()

    @pytest.mark.parametrize("size", SIZES + [(33, 17), (2, 300)])
    @pytest.mark.parametrize("k", [1, 3, 16])
    def test_sizes(self, impl, device, size, k):
        trim(impl, k != 16 or size[0] * size[1] <= 64)
        c = 20 if impl == "triton" and k == 3 else 4  # 20: more than one channel block of the Triton tiles
        ins = on_all(device, make_scn(3, c, *size, k, torch.float64, requires_grad=True))
        check_against_reference("semantic_modulate", impl, ins, SCN_INPUTS)

    @pytest.mark.parametrize("k", range(1, 11))
    def test_every_vector_count(self, impl, device, k):
        # the CPU kernels are compiled for each K up to 8 and read K at run time above it
        trim(impl, k in (4, 9))
        ins = on_all(device, make_scn(2, 3, 5, 7, k, requires_grad=True))
        check_against_reference("semantic_modulate", impl, ins, SCN_INPUTS, offset=1.0)

    def test_published_formulation(self, impl, device):
        # Batch statistics expanded over N, offset 1: SC-GAN's SCN layer exactly (float32 tolerance).
        x = torch.randn(4, 8, 9, 11, device=device, requires_grad=True)
        vectors = F.semantic_vectors(torch.randn(4, 4, 9, 11, device=device) * 40).requires_grad_()
        bank = torch.randn(4, 16, device=device, requires_grad=True)
        expected = published_scn(x, vectors, bank)
        mean, rstd = batch_stats(x)
        out = F.semantic_modulate(x, mean, rstd, vectors, bank, impl=impl)
        assert_close(out, expected, scale=4)
        g = torch.randn_like(out)
        for a, b in zip(torch.autograd.grad(out, (x, vectors, bank), g),
                        torch.autograd.grad(expected, (x, vectors, bank), g)):
            assert_close(a, b, scale=10)

    def test_zero_bank_is_plain_norm(self, impl, device):
        # SC-GAN initializes the bank with zeros: the layer starts as the parameter-free norm.
        x, mean, rstd, vectors, bank = on_all(device, make_scn(2, 3, 5, 4, 4))
        y = F.semantic_modulate(x, mean, rstd, vectors, torch.zeros_like(bank), impl=impl)
        assert_close(y, (x - mean[..., None, None]) * rstd[..., None, None])

    def test_deterministic_backward(self, impl, device):
        # No float atomics in either backend's backward: two runs agree bit for bit.
        ins = on_all(device, make_scn(2, 20, 9, 7, 3))
        g = torch.randn(2, 20, 9, 7, device=device)
        ops = ops_of(impl)
        with DeterministicAlgorithms():
            first = ops.semantic_modulate_backward(g, *ins, 1.0)
            second = ops.semantic_modulate_backward(g, *ins, 1.0)
        for a, b in zip(first, second):
            assert torch.equal(a, b)

    def test_gradcheck_float64(self, impl, device):
        for offset in (0.0, 1.0):
            ins = on_all(device, make_scn(2, 2, 3, 3, 2, torch.float64, requires_grad=True))
            assert torch.autograd.gradcheck(lambda *t: F.semantic_modulate(*t, offset=offset, impl=impl), ins,
                                            fast_mode=impl == "triton")

    def test_opcheck(self, impl, device):
        ops = ops_of(impl)
        ins = on_all(device, make_scn(2, 3, 6, 5, 4, requires_grad=True))
        torch.library.opcheck(ops.semantic_modulate.default, (*ins, 1.0))
        torch.library.opcheck(ops.semantic_modulate.default, (*on_all(device, make_scn(1, 2, 1, 1, 1)), 0.0))
        g = torch.randn(2, 3, 6, 5, device=device)
        torch.library.opcheck(ops.semantic_modulate_backward.default, (g, *[t.detach() for t in ins], 1.0))

    def test_compile_fullgraph(self, impl, device):
        def f(x, vectors, bank):
            mean, rstd = batch_stats(x)
            return F.semantic_modulate(x, mean, rstd, vectors, bank, impl=impl) * 2

        x = torch.randn(2, 4, 8, 8, device=device, requires_grad=True)
        vectors = F.semantic_vectors(torch.randn(2, 3, 8, 8, device=device) * 20).requires_grad_()
        bank = torch.randn(3, 8, device=device, requires_grad=True)
        out = torch.compile(f, fullgraph=True)(x, vectors, bank)
        ref = f(x, vectors, bank)
        assert_close(out, ref)
        for a, b in zip(torch.autograd.grad(out.sum(), (x, vectors, bank)),
                        torch.autograd.grad(ref.sum(), (x, vectors, bank))):
            assert_close(a, b, scale=4)

    @given(
        n=st.integers(1, 3), c=st.integers(1, 6), h=st.integers(1, 9), w=st.integers(1, 9), k=st.integers(1, 10),
        offset=st.sampled_from([0.0, 1.0, -0.5]), seed=st.integers(0, 2**16),
    )
    def test_fuzz(self, impl, device, n, c, h, w, k, offset, seed):
        torch.manual_seed(seed)
        ins = on_all(device, make_scn(n, c, h, w, k, torch.float64, requires_grad=True))
        check_against_reference("semantic_modulate", impl, ins, SCN_INPUTS, offset=offset)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", KERNEL_IMPLS)
class TestCandidateCombineKernels:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("k", [1, 3])
    def test_forward_backward(self, impl, device, dtype, layout, k):
        ins = on_all(device, make_scc(2, k, 5, 9, 7, dtype, layout, requires_grad=True))
        y = check_against_reference("candidate_combine", impl, ins, SCC_INPUTS, dtype, grad_scale=2)
        assert y.dtype == dtype and y.is_contiguous() and y.shape == (2, 5, 9, 7)

    @pytest.mark.parametrize("size", SIZES + [(33, 17), (2, 300), (37, 41)])
    @pytest.mark.parametrize("k", [1, 4])
    def test_sizes(self, impl, device, size, k):
        trim(impl, size != (37, 41))  # 1517 pixels: a full and a partial block of the CPU backward
        c = 20 if impl == "triton" and k == 4 else 4  # 20: more than one channel block of the Triton tiles
        ins = on_all(device, make_scc(3, k, c, *size, torch.float64, requires_grad=True))
        check_against_reference("candidate_combine", impl, ins, SCC_INPUTS)

    def test_published_formulation(self, impl, device):
        # SCC: y = sum_k R_k * conv_k(x) with K expert 3x3 convs without bias.
        x = torch.randn(2, 4, 9, 8, device=device)
        weights = torch.randn(3, 5, 4, 3, 3, device=device) * 0.2
        vectors = F.semantic_vectors(torch.randn(2, 3, 9, 8, device=device) * 30)
        cand = torch.stack([TF.conv2d(x, wk, padding=1) for wk in weights], 1)
        expected = sum(vectors[:, k : k + 1] * TF.conv2d(x, weights[k], padding=1) for k in range(3))
        assert_close(F.candidate_combine(vectors, cand, impl=impl), expected, scale=4)

    def test_gradcheck_float64(self, impl, device):
        ins = on_all(device, make_scc(2, 3, 2, 3, 4, torch.float64, requires_grad=True))
        assert torch.autograd.gradcheck(lambda *t: F.candidate_combine(*t, impl=impl), ins, fast_mode=impl == "triton")

    def test_opcheck(self, impl, device):
        ops = ops_of(impl)
        ins = on_all(device, make_scc(2, 3, 4, 5, 6, requires_grad=True))
        torch.library.opcheck(ops.candidate_combine.default, tuple(ins))
        torch.library.opcheck(ops.candidate_combine.default, tuple(on_all(device, make_scc(1, 1, 1, 1, 1))))
        g = torch.randn(2, 4, 5, 6, device=device)
        torch.library.opcheck(ops.candidate_combine_backward.default, (g, *[t.detach() for t in ins]))

    def test_compile_fullgraph(self, impl, device):
        def f(logits, cand):
            return F.candidate_combine(F.semantic_vectors(logits, 0.5), cand, impl=impl).square()

        logits = torch.randn(2, 3, 6, 7, device=device, requires_grad=True)
        cand = torch.randn(2, 3, 4, 6, 7, device=device, requires_grad=True)
        out = torch.compile(f, fullgraph=True)(logits, cand)
        ref = f(logits, cand)
        assert_close(out, ref)
        for a, b in zip(torch.autograd.grad(out.sum(), (logits, cand)), torch.autograd.grad(ref.sum(), (logits, cand))):
            assert_close(a, b)

    @given(
        n=st.integers(1, 3), k=st.integers(1, 5), c=st.integers(1, 6), h=st.integers(1, 9), w=st.integers(1, 9),
        seed=st.integers(0, 2**16),
    )
    def test_fuzz(self, impl, device, n, k, c, h, w, seed):
        torch.manual_seed(seed)
        ins = on_all(device, make_scc(n, k, c, h, w, torch.float64, requires_grad=True))
        check_against_reference("candidate_combine", impl, ins, SCC_INPUTS)


# ---- errors


class TestSemanticErrors:
    @pytest.mark.parametrize("impl", ["native", pytest.param("triton", marks=needs_triton), "reference"])
    def test_semantic_modulate_bad_input(self, impl):
        if impl == "native":
            pytest.importorskip("semnorm._C", reason="extension not built")
        x, mean, rstd, v, bank = make_scn(2, 3, 4, 5, 4)

        def call(**kw):
            args = dict(x=x, mean=mean, rstd=rstd, vectors=v, bank=bank) | kw
            return F.semantic_modulate(args["x"], args["mean"], args["rstd"], args["vectors"], args["bank"], impl=impl)

        with pytest.raises(ValueError, match="x must have 4 dimensions"):
            call(x=x[0])
        with pytest.raises(ValueError, match="x must not be empty"):
            call(x=x[:, :, :0])
        with pytest.raises(TypeError, match="x must be a floating point"):
            call(x=x.long())
        with pytest.raises(ValueError, match=r"mean must have shape \(2, 3\)"):
            call(mean=mean[:, :2])
        with pytest.raises(TypeError, match="rstd must have dtype torch.float32"):
            call(rstd=rstd.double())
        with pytest.raises(TypeError, match="mean must have dtype torch.float64"):
            call(x=x.double(), vectors=v.double(), bank=bank.double())
        with pytest.raises(ValueError, match=r"vectors must have shape \(2, 4, 4, 5\), got \(2, 4, 5, 4\)"):
            call(vectors=v.transpose(2, 3))
        with pytest.raises(ValueError, match=r"vectors must have shape \(2, 4, 4, 5\), got \(1, 4, 4, 5\)"):
            call(vectors=v[:1])
        with pytest.raises(ValueError, match="vectors must have 4 dimensions"):
            call(vectors=v[0])
        with pytest.raises(ValueError, match="vectors must not be empty"):
            call(vectors=v[:, :0])
        with pytest.raises(TypeError, match="vectors must have dtype torch.float32, got torch.float16"):
            call(vectors=v.half())
        with pytest.raises(ValueError, match=r"bank must have shape \(4, 6\), got \(4, 8\)"):
            call(bank=torch.randn(4, 8))
        with pytest.raises(ValueError, match=r"bank must have shape \(4, 6\), got \(3, 6\)"):
            call(bank=bank[:3])
        with pytest.raises(ValueError, match="bank must have 2 dimensions"):
            call(bank=bank[0])
        with pytest.raises(TypeError, match="bank must have dtype torch.float32, got torch.float16"):
            call(bank=bank.half())
        with pytest.raises(ValueError, match="x is on cpu but bank is on meta"):
            call(bank=bank.to("meta"))

    @pytest.mark.parametrize("impl", ["native", pytest.param("triton", marks=needs_triton), "reference"])
    def test_candidate_combine_bad_input(self, impl):
        if impl == "native":
            pytest.importorskip("semnorm._C", reason="extension not built")
        v, cand = make_scc(2, 3, 4, 5, 6)
        with pytest.raises(ValueError, match="vectors must have 4 dimensions"):
            F.candidate_combine(v[0], cand, impl=impl)
        with pytest.raises(ValueError, match="candidates must have 5 dimensions"):
            F.candidate_combine(v, cand[0], impl=impl)
        with pytest.raises(ValueError, match=r"candidates must have shape \(2, 3, 4, 5, 6\), got \(2, 2, 4, 5, 6\)"):
            F.candidate_combine(v, cand[:, :2], impl=impl)
        with pytest.raises(ValueError, match=r"candidates must have shape \(2, 3, 4, 5, 6\), got \(2, 3, 4, 6, 5\)"):
            F.candidate_combine(v, cand.transpose(3, 4), impl=impl)
        with pytest.raises(ValueError, match="candidates must not be empty"):
            F.candidate_combine(v, cand[:, :, :0], impl=impl)
        with pytest.raises(ValueError, match="vectors must not be empty"):
            F.candidate_combine(v[:0], cand[:0], impl=impl)
        with pytest.raises(TypeError, match="candidates must have dtype torch.float32, got torch.float64"):
            F.candidate_combine(v, cand.double(), impl=impl)
        with pytest.raises(TypeError, match="vectors must be a floating point"):
            F.candidate_combine(v.int(), cand, impl=impl)
        with pytest.raises(ValueError, match="vectors is on cpu but candidates is on meta"):
            F.candidate_combine(v, cand.to("meta"), impl=impl)

    @pytest.mark.parametrize("impl", KERNEL_IMPLS)
    def test_kernel_checks_on_its_own(self, impl):
        # Bypass the Python layer: the kernels validate every argument themselves. C++ raises
        # RuntimeError and prints shapes as [4, 6] and dtypes as Double; Triton raises ValueError /
        # TypeError with (4, 6) and torch.float64.
        x, mean, rstd, v, bank = make_scn(2, 3, 4, 5, 4)
        ops = ops_of(impl)
        err = RuntimeError if impl == "native" else (ValueError, TypeError)

        def dims(*d):
            return r"[\[\(]" + ", ".join(map(str, d)) + r"[\]\)]"

        double, single = r"(Double|torch\.float64)", r"(Float|torch\.float32)"
        with pytest.raises(err, match=rf"semantic_modulate: bank must have shape {dims(4, 6)}, got {dims(4, 8)}"):
            ops.semantic_modulate(x, mean, rstd, v, torch.randn(4, 8), 1.0)
        with pytest.raises(err, match=rf"semantic_modulate: vectors must have shape {dims(2, 4, 4, 5)}"):
            ops.semantic_modulate(x, mean, rstd, v[:1], bank, 1.0)
        with pytest.raises(err, match=f"semantic_modulate: vectors must have dtype {double}"):
            ops.semantic_modulate(x.double(), mean.double(), rstd.double(), v, bank.double(), 1.0)
        with pytest.raises(err, match=f"semantic_modulate: rstd must have dtype {single}"):
            ops.semantic_modulate(x, mean, rstd.double(), v, bank, 1.0)
        with pytest.raises(err, match="semantic_modulate: x must not be empty"):
            ops.semantic_modulate(x[:, :, :0], mean, rstd, v[:, :, :0], bank, 1.0)
        with pytest.raises(err, match="semantic_modulate: vectors must have 4 dimensions"):
            ops.semantic_modulate(x, mean, rstd, v[0], bank, 1.0)
        with pytest.raises(err, match="semantic_modulate_backward: grad_y must have shape"):
            ops.semantic_modulate_backward(x[:1], x, mean, rstd, v, bank, 1.0)
        with pytest.raises(err, match="semantic_modulate_backward: grad_y must have dtype"):
            ops.semantic_modulate_backward(x.double(), x, mean, rstd, v, bank, 1.0)
        vv, cand = make_scc(2, 3, 4, 5, 6)
        with pytest.raises(err, match=rf"candidate_combine: candidates must have shape {dims(2, 3, 4, 5, 6)}"):
            ops.candidate_combine(vv, cand[:, :, :, :4])
        with pytest.raises(err, match=f"candidate_combine: candidates must have dtype {single}"):
            ops.candidate_combine(vv, cand.half())
        with pytest.raises(err, match="candidate_combine: candidates must have 5 dimensions"):
            ops.candidate_combine(vv, cand[0])
        with pytest.raises(err, match="candidate_combine_backward: grad_y must have shape"):
            ops.candidate_combine_backward(torch.randn(2, 5, 5, 6), vv, cand)


# ---- the Triton kernels compiled for sm_90 without a GPU (see tests/test_norm.py)

AOT_SEMANTIC = """
from semnorm.triton import semantic as S
for dt in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
    acc = torch.float64 if dt == torch.float64 else torch.float32
    for (n, c, h, w, k) in [(2, 5, 9, 7, 4), (4, 64, 64, 64, 16), (1, 1, 1, 1, 1)]:
        x = torch.randn(n, c, h, w).to(dt)
        mean, rstd = torch.randn(n, c, dtype=acc), torch.rand(n, c, dtype=acc)
        v, bank = torch.rand(n, k, h, w).to(dt), torch.randn(k, 2 * c, dtype=acc)
        S.semantic_modulate(x, mean, rstd, v, bank, 1.0)
        S.semantic_modulate_backward(x, x, mean, rstd, v, bank, 1.0)
        cand = torch.randn(n, k, c, h, w).to(dt)
        S.candidate_combine(v, cand)
        S.candidate_combine_backward(x, v, cand)
"""


@pytest.mark.slow
@needs_triton
def test_triton_kernels_compile_for_sm90():
    pytest.importorskip("triton.backends.nvidia")
    from test_norm import compile_triton_launches

    compile_triton_launches(AOT_SEMANTIC)
