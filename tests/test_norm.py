"""channel_moments / norm_stats / normalize_modulate: native kernels vs reference vs naive loops and PyTorch's norms."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st
from optest import DEVICES, DTYPES, KERNEL_IMPLS, LAYOUTS, assert_close, make_x, needs_triton

import semnorm
from semnorm import functional as F
from semnorm import reference

HAS_TRITON = "cpu" in semnorm.triton_devices()
# Backends of the module-level comparisons (the kernel class below parametrizes with KERNEL_IMPLS).
IMPLS = (["native"] if semnorm.has_extension else []) + (["triton"] if HAS_TRITON else []) + ["reference"]
# Plane sizes: a multiple of the kernels' 16 lanes, a ragged one, a single pixel.
SHAPES = [(2, 3, 4, 8), (3, 2, 5, 7), (2, 3, 1, 1)]
VARIANTS = ["plain", "blend", "noise", "blend_noise"]


def opmath(dtype):
    return reference.opmath_dtype(dtype)


def make_noise(x, requires_grad=False):
    n, c, h, w = x.shape
    acc = opmath(x.dtype)
    noise = torch.randn(n, h, w, dtype=acc).requires_grad_(requires_grad)
    scale = (torch.rand(c, dtype=acc) + 0.5).requires_grad_(requires_grad)
    return noise, scale


def naive_moments(x, per_instance, noise=None, scale=None):
    """Loop over channels (and instances) in float64 with torch.var: the oracle of the reference."""
    n, c = x.shape[:2]
    xe = x.double()
    if noise is not None:
        xe = xe + scale.double().view(1, -1, 1, 1) * noise.double()[:, None]
    if per_instance:
        mean = torch.zeros(n, c, dtype=torch.float64)
        m2 = torch.zeros(n, c, dtype=torch.float64)
        for i in range(n):
            for j in range(c):
                v = xe[i, j].flatten()
                mean[i, j] = v.mean()
                m2[i, j] = v.var(unbiased=False) * v.numel()
    else:
        mean = torch.zeros(c, dtype=torch.float64)
        m2 = torch.zeros(c, dtype=torch.float64)
        for j in range(c):
            v = xe[:, j].flatten()
            mean[j] = v.mean()
            m2[j] = v.var(unbiased=False) * v.numel()
    return mean, m2


def modulate_inputs(x, variant, requires_grad=False):
    """(mean, rstd, kwargs) for normalize_modulate in the given variant, all with x's dtypes."""
    n, c = x.shape[:2]
    acc = opmath(x.dtype)
    mean = torch.randn(n, c, dtype=acc).requires_grad_(requires_grad)
    rstd = (torch.rand(n, c, dtype=acc) + 0.5).requires_grad_(requires_grad)

    def dense():
        return torch.randn(x.shape, dtype=torch.float64).to(x.dtype).requires_grad_(requires_grad)

    kw = {"gamma": dense(), "beta": dense()}
    if "blend" in variant:
        kw.update(gamma2=dense(), beta2=dense(), blend=torch.tensor([0.3, 0.8], dtype=acc).requires_grad_(requires_grad))
    if "noise" in variant:
        kw["noise"], kw["noise_scale"] = make_noise(x, requires_grad)
    return mean, rstd, kw


def clone_leaves(mean, rstd, kw):
    def c(t):
        return t.detach().clone().requires_grad_(t.requires_grad)

    return c(mean), c(rstd), {k: c(v) for k, v in kw.items()}


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
    if t is None:
        return None
    src = t.detach()
    if src.device.type != device:
        if dense(src):  # .to keeps the strides of dense tensors (channels_last, permuted views)
            src = src.to(device)
        else:
            wide = torch.zeros(*src.shape[:-1], 2 * src.shape[-1], dtype=src.dtype, device=device)
            wide[..., ::2] = src
            src = wide[..., ::2]
    return src.requires_grad_(t.requires_grad)


def on_all(device, mean, rstd, kw):
    return on(device, mean), on(device, rstd), {k: on(device, v) for k, v in kw.items()}


def cpu(t):
    return t.detach().cpu()


# The Triton interpreter runs a kernel program in about a millisecond: the Triton share of the
# dtype x layout grids keeps every dtype and layout, with fewer combinations of the other axes.
def trim(impl, *flags):
    """Skip the Triton run of a grid point unless ``flags`` pick it (True: run)."""
    if impl == "triton" and not all(flags):
        pytest.skip("trimmed for the Triton interpreter (the other grid points cover this one)")


def call_modulate(x, mean, rstd, kw, impl, offset=1.0):
    kw = dict(kw)
    g, b = kw.pop("gamma"), kw.pop("beta")
    return F.normalize_modulate(x, mean, rstd, g, b, offset=offset, impl=impl, **kw)


# ---------------------------------------------------------------------------------------------
# reference vs naive loops


@pytest.mark.parametrize("per_instance", [True, False])
@pytest.mark.parametrize("noise", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_moments_match_naive_loop(per_instance, noise, shape):
    x = torch.randn(shape, dtype=torch.float64) * 3 + 2
    nz, sc = make_noise(x) if noise else (None, None)
    mean, m2 = reference.channel_moments(x, per_instance, nz, sc)
    exp_mean, exp_m2 = naive_moments(x, per_instance, nz, sc)
    torch.testing.assert_close(mean, exp_mean)
    torch.testing.assert_close(m2, exp_m2)


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_modulate_matches_naive_loop(variant):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    mean, rstd, kw = modulate_inputs(x, variant)
    y = call_modulate(x, mean, rstd, kw, "reference", offset=0.7)
    exp = torch.empty_like(x)
    for n in range(2):
        for c in range(3):
            xe = x[n, c] + (kw["noise_scale"][c] * kw["noise"][n] if "noise" in kw else 0)
            g, b = kw["gamma"][n, c], kw["beta"][n, c]
            if "blend" in kw:
                a_g, a_b = kw["blend"]
                g = a_g * g + (1 - a_g) * kw["gamma2"][n, c]
                b = a_b * b + (1 - a_b) * kw["beta2"][n, c]
            exp[n, c] = (xe - mean[n, c]) * rstd[n, c] * (0.7 + g) + b
    torch.testing.assert_close(y, exp)


# ---------------------------------------------------------------------------------------------
# native vs reference


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", KERNEL_IMPLS)
class TestStatsKernels:
    """The kernels (impl: native C++/CUDA or Triton) against the reference, on each device."""

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("per_instance", [True, False])
    @pytest.mark.parametrize("noise", [False, True])
    def test_moments_forward_backward(self, impl, device, dtype, layout, per_instance, noise):
        trim(impl, noise == (layout != "contiguous") and per_instance == (dtype in (torch.float32, torch.bfloat16)))
        x = on(device, make_x((2, 3, 5, 7), dtype, layout, requires_grad=True))
        xr = x.detach().clone().requires_grad_()
        nz, sc = make_noise(x, requires_grad=True) if noise else (None, None)
        nz, sc = on(device, nz), on(device, sc)
        nzr, scr = (nz.detach().clone().requires_grad_(), sc.detach().clone().requires_grad_()) if noise else (None, None)
        mean, m2 = F.channel_moments(x, per_instance, nz, sc, impl=impl)
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
    def test_modulate_forward_backward(self, impl, device, dtype, layout, variant):
        trim(impl, VARIANTS.index(variant) % 2 == DTYPES.index(dtype) % 2 or layout == "channels_last")
        x = on(device, make_x((2, 3, 5, 7), dtype, layout, requires_grad=True))
        xr = x.detach().clone().requires_grad_()
        mean, rstd, kw = on_all(device, *modulate_inputs(x, variant, requires_grad=True))
        mean_r, rstd_r, kw_r = clone_leaves(mean, rstd, kw)
        if layout == "channels_last":  # modulation maps in the same layout as x
            kw["gamma"] = kw["gamma"].detach().contiguous(memory_format=torch.channels_last).requires_grad_()
            kw_r["gamma"] = kw["gamma"].detach().clone().requires_grad_()
        y = call_modulate(x, mean, rstd, kw, impl)
        yr = call_modulate(xr, mean_r, rstd_r, kw_r, "reference")
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

    @pytest.mark.parametrize("shape", SHAPES + [(2, 2, 33, 40)])  # the last: more than one pixel block per plane
    @pytest.mark.parametrize("norm", ["batch", "instance"])
    def test_norm_chain_shapes(self, impl, device, shape, norm):
        if norm == "instance" and shape[2] * shape[3] == 1:
            pytest.skip("instance norm needs more than one pixel")
        x = torch.randn(shape, device=device, requires_grad=True)
        xr = x.detach().clone().requires_grad_()
        gamma, beta = torch.randn(shape, device=device), torch.randn(shape, device=device)
        outs = []
        for t, which in ((x, impl), (xr, "reference")):
            mean, rstd = F.norm_stats(t, norm, impl=which)
            y = F.normalize_modulate(t, mean, rstd, gamma, beta, impl=which)
            y.backward(torch.ones_like(y) + torch.arange(y.numel(), device=device).view(y.shape) % 3)
            outs.append(y)
        assert_close(outs[0], outs[1])
        assert_close(x.grad, xr.grad, scale=2)

    def test_deterministic_backward(self, impl, device):
        # Per-program partial sums reduced in a fixed order, no float atomics: two runs agree bit for bit.
        ops = semnorm._extension.op_namespace(impl)
        x = torch.randn(2, 3, 33, 40, device=device)
        mean, rstd, kw = on_all(device, *modulate_inputs(x.cpu(), "blend_noise"))
        args = (x, mean, rstd, kw["gamma"], kw["beta"], kw["gamma2"], kw["beta2"], kw["blend"], kw["noise"],
                kw["noise_scale"], 1.0)
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            runs = [ops.normalize_modulate_backward(torch.ones_like(x), *args) for _ in range(2)]
            runs += [ops.channel_moments_backward(mean[0], rstd[0], x, mean[0], False, kw["noise"], kw["noise_scale"])
                     for _ in range(2)]
        finally:
            torch.use_deterministic_algorithms(before)
        for a, b in zip(runs[0] + runs[2], runs[1] + runs[3]):
            assert torch.equal(a, b)

    def test_gradcheck_float64(self, impl, device):
        fast = impl == "triton"  # the interpreter: one random direction per input instead of full Jacobians
        x = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
        noise, scale = (on(device, t) for t in make_noise(x.cpu(), requires_grad=True))
        for pi in (True, False):
            assert torch.autograd.gradcheck(
                lambda x, noise, scale: F.channel_moments(x, pi, noise, scale, impl=impl), (x, noise, scale),
                fast_mode=fast,
            )
        mean, rstd, kw = on_all(device, *modulate_inputs(x.cpu(), "blend_noise", requires_grad=True))
        keys = list(kw)

        def f(x, mean, rstd, *vals):
            return call_modulate(x, mean, rstd, dict(zip(keys, vals)), impl, offset=0.5)

        assert torch.autograd.gradcheck(f, (x, mean, rstd, *kw.values()), fast_mode=fast)

        def chain(x, noise, scale):
            mean, rstd = F.norm_stats(x, "batch", noise=noise, noise_scale=scale, impl=impl)
            return F.normalize_modulate(x, mean, rstd, kw["gamma"], kw["beta"], noise=noise, noise_scale=scale, impl=impl)

        assert torch.autograd.gradcheck(chain, (x, noise, scale), fast_mode=fast)

    @pytest.mark.parametrize("per_instance", [True, False])
    @pytest.mark.parametrize("noise", [False, True])
    def test_opcheck_moments(self, impl, device, per_instance, noise):
        ops = semnorm._extension.op_namespace(impl)
        x = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
        nz, sc = (on(device, t) for t in make_noise(x.cpu(), requires_grad=True)) if noise else (None, None)
        torch.library.opcheck(ops.channel_moments.default, (x, per_instance, nz, sc))
        with torch.no_grad():
            mean, _ = ops.channel_moments(x, per_instance, nz, sc)
        g = torch.randn_like(mean)
        torch.library.opcheck(
            ops.channel_moments_backward.default,
            (g, g.clone(), x.detach(), mean, per_instance, None if nz is None else nz.detach(), None if sc is None else sc.detach()),
        )

    @pytest.mark.parametrize("variant", VARIANTS)
    def test_opcheck_modulate(self, impl, device, variant):
        ops = semnorm._extension.op_namespace(impl)
        x = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
        mean, rstd, kw = on_all(device, *modulate_inputs(x.cpu(), variant, requires_grad=True))
        args = (x, mean, rstd, kw["gamma"], kw["beta"], kw.get("gamma2"), kw.get("beta2"), kw.get("blend"),
                kw.get("noise"), kw.get("noise_scale"), 0.5)
        torch.library.opcheck(ops.normalize_modulate.default, args)
        detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(ops.normalize_modulate_backward.default, (torch.randn_like(x), *detached))

    def test_backward_empty_grads_for_absent_inputs(self, impl, device):
        ops = semnorm._extension.op_namespace(impl)
        x = torch.randn(2, 3, 4, 5, device=device)
        mean, rstd, kw = on_all(device, *modulate_inputs(x.cpu(), "plain"))
        grads = ops.normalize_modulate_backward(torch.randn_like(x), x, mean, rstd, kw["gamma"], kw["beta"],
                                                None, None, None, None, None, 1.0)
        # grad_beta too: without a blend it equals grad_y, which the autograd formula passes on
        assert [g.numel() == 0 for g in grads] == [False] * 4 + [True] * 5
        assert all(g.device == x.device for g in grads)
        _, gs = ops.channel_moments_backward(mean[0], mean[0], x, mean[0], False)
        assert gs.numel() == 0

    @pytest.mark.parametrize("norm", ["syncbatch", "instance"])
    def test_compile_fullgraph(self, impl, device, norm):
        buffers = {}
        if norm != "instance":  # running-stat updates in place inside the compiled graph
            buffers = {w: (torch.zeros(3, device=device), torch.ones(3, device=device)) for w in ("compiled", "eager")}

        def f(x, gamma, beta, noise, scale, which):
            rm, rv = buffers.get(which, (None, None))
            mean, rstd = F.norm_stats(x, norm, running_mean=rm, running_var=rv, noise=noise, noise_scale=scale, impl=impl)
            return F.normalize_modulate(x, mean, rstd, gamma, beta, noise=noise, noise_scale=scale, impl=impl)

        x = torch.randn(2, 3, 6, 6, device=device, requires_grad=True)
        gamma = torch.randn(2, 3, 6, 6, device=device, requires_grad=True)
        beta = torch.randn(2, 3, 6, 6, device=device, requires_grad=True)
        noise, scale = (on(device, t) for t in make_noise(x.cpu(), requires_grad=True))
        args = (x, gamma, beta, noise, scale)
        out = torch.compile(f, fullgraph=True)(*args, "compiled")
        ref = f(*args, "eager")
        assert_close(out, ref)
        for a, b in zip(buffers.get("compiled", ()), buffers.get("eager", ())):
            assert_close(a, b)
        g1 = torch.autograd.grad(out.square().sum(), args)
        g2 = torch.autograd.grad(ref.square().sum(), args)
        for a, b in zip(g1, g2):
            assert_close(a, b, scale=4)

    @given(
        n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9),
        variant=st.sampled_from(VARIANTS), offset=st.floats(-2, 2), seed=st.integers(0, 2**16),
    )
    def test_fuzz_shapes(self, impl, device, n, c, h, w, variant, offset, seed):
        torch.manual_seed(seed)
        x = torch.randn(n, c, h, w, device=device) * 2 + 1
        for pi in (True, False):
            a = F.channel_moments(x, pi, impl=impl)
            b = F.channel_moments(x, pi, impl="reference")
            assert_close(a[0], b[0])
            assert_close(a[1], b[1], scale=4)
        mean, rstd, kw = on_all(device, *modulate_inputs(x.cpu(), variant))
        assert_close(call_modulate(x, mean, rstd, kw, impl, offset), call_modulate(x, mean, rstd, kw, "reference", offset))


def test_reference_gradcheck_float64():
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    noise, scale = make_noise(x, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: reference.channel_moments(t[0], False, t[1], t[2]), (x, noise, scale))
    mean, rstd, kw = modulate_inputs(x, "blend_noise", requires_grad=True)
    keys = list(kw)

    def f(x, mean, rstd, *vals):
        return call_modulate(x, mean, rstd, dict(zip(keys, vals)), "reference", offset=0.5)

    assert torch.autograd.gradcheck(f, (x, mean, rstd, *kw.values()))


# ---------------------------------------------------------------------------------------------
# norm_stats against PyTorch's norms


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", ["batch", "instance", "syncbatch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch_norms(impl, norm, dtype):
    x = (torch.randn(3, 4, 5, 6, dtype=dtype) * 2 + 1).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    zeros = torch.zeros(x.shape, dtype=dtype)
    mean, rstd = F.norm_stats(x, norm, impl=impl)
    assert mean.shape == rstd.shape == (3, 4) and mean.is_contiguous() and rstd.is_contiguous()
    y = F.normalize_modulate(x, mean, rstd, zeros, zeros, impl=impl)
    exp = TF.instance_norm(xr) if norm == "instance" else TF.batch_norm(xr, None, None, training=True)
    assert_close(y, exp, scale=2)
    gy = torch.randn_like(y)
    y.backward(gy)
    exp.backward(gy)
    assert_close(x.grad, xr.grad, scale=4)


@pytest.mark.parametrize("impl", IMPLS)
def test_running_stats_and_eval_match_batchnorm2d(impl):
    bn = torch.nn.BatchNorm2d(4, affine=False)
    running_mean, running_var = torch.zeros(4), torch.ones(4)
    for step in range(3):
        x = torch.randn(2, 4, 3, 5) * (step + 1) + step
        bn(x)
        F.norm_stats(x, running_mean=running_mean, running_var=running_var, impl=impl)
    torch.testing.assert_close(running_mean, bn.running_mean)
    torch.testing.assert_close(running_var, bn.running_var)
    bn.eval()
    x = (torch.randn(2, 4, 3, 5) + 1).requires_grad_()
    xr = x.detach().clone().requires_grad_()
    mean, rstd = F.norm_stats(x, running_mean=running_mean, running_var=running_var, training=False, impl=impl)
    y = F.normalize_modulate(x, mean, rstd, torch.zeros_like(x), torch.zeros_like(x), impl=impl)
    exp = bn(xr)
    assert_close(y, exp)
    y.sum().backward()
    exp.sum().backward()
    assert_close(x.grad, xr.grad)
    torch.testing.assert_close(running_mean, bn.running_mean)  # eval leaves the buffers alone
    assert not mean.requires_grad and not rstd.requires_grad


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_size_one_raises_like_pytorch(impl):
    x = torch.randn(1, 3, 1, 1)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        TF.batch_norm(x, None, None, training=True)
    for norm in ("batch", "syncbatch"):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training, got input size"):
            F.norm_stats(x, norm, impl=impl)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        F.norm_stats(x, "instance", impl=impl)
    F.norm_stats(x, training=False, running_mean=torch.zeros(3), running_var=torch.ones(3), impl=impl)  # eval is fine


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_statistics_in_float32(impl, dtype):
    x = (torch.randn(4, 3, 16, 16) * 3 + 20).to(dtype)
    for pi in (True, False):
        mean, m2 = F.channel_moments(x, pi, impl=impl)
        exp_mean, exp_m2 = naive_moments(x, pi)
        assert mean.dtype == torch.float32
        torch.testing.assert_close(mean.double(), exp_mean, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(m2.double(), exp_m2, rtol=1e-5, atol=1e-4)
    mean, rstd = F.norm_stats(x, impl=impl)
    y = F.normalize_modulate(x, mean, rstd, torch.zeros_like(x), torch.zeros_like(x), impl=impl)
    exp = TF.batch_norm(x.double(), None, None, training=True)
    torch.testing.assert_close(y.double(), exp, rtol=0, atol=3e-2 if dtype == torch.bfloat16 else 4e-3)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("per_instance", [True, False])
def test_large_mean_no_cancellation(impl, per_instance):
    x = 1000 + torch.randn(4, 3, 32, 32)
    mean, m2 = F.channel_moments(x, per_instance, impl=impl)
    exp_mean, exp_m2 = naive_moments(x, per_instance)
    torch.testing.assert_close(m2.double(), exp_m2, rtol=1e-5, atol=0)
    torch.testing.assert_close(mean.double(), exp_mean, rtol=3e-7, atol=0)  # 2 float32 ulps at 1000
    # the one-pass E[x^2] - E[x]^2 in float32 is off by percents here
    dims = (2, 3) if per_instance else (0, 2, 3)
    count = x[0, 0].numel() * (1 if per_instance else x.shape[0])
    naive = (x.square().mean(dims) - x.mean(dims).square()) * count
    assert ((naive.double() - exp_m2).abs() / exp_m2).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# synchronized batch norm on two gloo processes


def _sync_worker(rank, world, init_file, out_dir, impls):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        x_full = torch.randn(5, 3, 4, 6, generator=g, dtype=torch.float64) * 2 + 3
        gamma = torch.randn(5, 3, 4, 6, generator=g, dtype=torch.float64)
        weight = torch.randn(5, 3, 4, 6, generator=g, dtype=torch.float64)
        rows = slice(0, 2) if rank == 0 else slice(2, 5)  # unequal batch sizes 2 and 3
        out = {}
        for impl in impls:
            x = x_full[rows].clone().requires_grad_()
            rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
            mean, rstd = F.norm_stats(x, "syncbatch", running_mean=rm, running_var=rv, impl=impl)
            y = F.normalize_modulate(x, mean, rstd, gamma[rows], torch.zeros_like(x), impl=impl)
            (y * weight[rows]).sum().backward()
            out[impl] = {"mean": mean[0], "rstd": rstd[0], "y": y.detach(), "grad": x.grad, "rm": rm, "rv": rv}
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_syncbatch_two_processes_gloo(tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    mp.spawn(_sync_worker, args=(2, str(tmp_path / "init"), str(tmp_path), IMPLS), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    g = torch.Generator().manual_seed(0)
    x_full = torch.randn(5, 3, 4, 6, generator=g, dtype=torch.float64) * 2 + 3
    gamma = torch.randn(5, 3, 4, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 3, 4, 6, generator=g, dtype=torch.float64)
    for impl in IMPLS:
        x = x_full.clone().requires_grad_()
        rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
        mean, rstd = F.norm_stats(x, "batch", running_mean=rm, running_var=rv, impl=impl)
        y = F.normalize_modulate(x, mean, rstd, gamma, torch.zeros_like(x), impl=impl)
        (y * weight).sum().backward()
        r0, r1 = results[0][impl], results[1][impl]
        for r in (r0, r1):
            torch.testing.assert_close(r["mean"], mean[0])
            torch.testing.assert_close(r["rstd"], rstd[0])
            torch.testing.assert_close(r["rm"], rm)
            torch.testing.assert_close(r["rv"], rv)
        torch.testing.assert_close(torch.cat([r0["y"], r1["y"]]), y.detach())
        torch.testing.assert_close(torch.cat([r0["grad"], r1["grad"]]), x.grad)


# ---------------------------------------------------------------------------------------------
# Triton kernels compiled for the GPU (sm_90) without one: the interpreter is lax where the compiler
# is not (Python floats, constexpr specialisation of ints equal to 1, scalar atomics), so every
# launch a launcher makes is compiled through Triton's full pipeline, ptxas included, instead of run.

AOT_HARNESS = r"""
import os, sys, inspect, traceback
os.environ.pop("TRITON_INTERPRET", None)
import torch, triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

TARGET = GPUTarget("cuda", 90, 32)
SEEN = {}
FAILS = []
_TY = {torch.float32: "fp32", torch.float64: "fp64", torch.float16: "fp16", torch.bfloat16: "bf16",
       torch.int64: "i64", torch.int32: "i32", torch.uint8: "u8", torch.int8: "i8", torch.bool: "i1"}

def _sig(fn, args, kwargs):
    names = fn.arg_names
    vals = dict(zip(names, args)); vals.update({k: v for k, v in kwargs.items() if k in names})
    sig, consts = {}, {}
    ann = {p.name: p.annotation_type for p in fn.params}
    for i, name in enumerate(names):
        p = fn.params[i]
        v = vals[name]
        if p.is_constexpr:
            sig[name] = "constexpr"; consts[name] = v; continue
        if isinstance(v, torch.Tensor):
            sig[name] = "*" + _TY[v.dtype]
        elif isinstance(v, bool):
            sig[name] = "i1"
        elif isinstance(v, int):
            if v == 1:
                sig[name] = "constexpr"; consts[name] = 1
            else:
                sig[name] = "i32" if -2**31 <= v < 2**31 else "i64"
        elif isinstance(v, float):
            sig[name] = ann[name] or "fp32"
        else:
            raise TypeError(f"{name}: {type(v)}")
    return sig, consts

def _getitem(self, grid):
    def run(*args, **kwargs):
        opts = {k: v for k, v in kwargs.items() if k in ("num_warps", "num_stages")}
        sig, consts = _sig(self, args, kwargs)
        key = (self.fn.__name__, tuple(sorted(sig.items())), tuple(sorted((k, str(v)) for k, v in consts.items())), tuple(sorted(opts.items())))
        if key in SEEN: return
        try:
            src = ASTSource(self, sig, constexprs=consts)
            k = triton.compile(src, target=TARGET, options=opts)
            SEEN[key] = k.metadata.shared if hasattr(k, "metadata") else 0
            print("ok  ", self.fn.__name__, {k: v for k, v in consts.items() if not isinstance(v, int) or k.isupper()}, flush=True)
        except Exception as e:
            SEEN[key] = None
            FAILS.append((self.fn.__name__, consts, e))
            print("FAIL", self.fn.__name__, consts, "\\n", "".join(traceback.format_exception_only(e))[-3000:], flush=True)
    return run

JITFunction.__getitem__ = _getitem
"""


def compile_triton_launches(body: str) -> None:
    """Run ``body`` (launcher calls on CPU tensors) in a subprocess where each kernel launch compiles for sm_90."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    code = AOT_HARNESS + "\n" + body + "\nprint('fails:', len(FAILS))\nsys.exit(1 if FAILS else 0)\n"
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-6000:]


AOT_STATS = """
from semnorm.triton import stats as S
for dt in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
    acc = torch.float64 if dt == torch.float64 else torch.float32
    for shape in [(2, 3, 5, 7), (2, 3, 64, 64), (1, 3, 1, 1), (2, 1, 1, 1)]:  # ints equal to 1 become constants
        n, c, h, w = shape
        x = torch.randn(shape).to(dt)
        nz, sc = torch.randn(n, h, w, dtype=acc), torch.rand(c, dtype=acc)
        mean, rstd = torch.randn(n, c, dtype=acc), torch.rand(n, c, dtype=acc)
        for pi in (True, False):
            for noise in (False, True):
                S.channel_moments(x, pi, nz if noise else None, sc if noise else None)
                m = mean if pi else mean[0]
                S.channel_moments_backward(m, m, x, m, pi, nz if noise else None, sc if noise else None)
        for blend in (False, True):
            for noise in (False, True):
                a = (x, mean, rstd, x, x, x if blend else None, x if blend else None,
                     torch.ones(2, dtype=acc) if blend else None, nz if noise else None, sc if noise else None, 0.7)
                S.normalize_modulate(*a)
                S.normalize_modulate_backward(x, *a)
"""


@pytest.mark.slow
@needs_triton
def test_triton_kernels_compile_for_sm90():
    pytest.importorskip("triton.backends.nvidia")
    compile_triton_launches(AOT_STATS)


# ---------------------------------------------------------------------------------------------
# errors


def kernel_errors(impl):
    """What a kernel raises on bad input: c10::Error (RuntimeError) from C++, ValueError/TypeError from Triton."""
    return RuntimeError if impl == "native" else (ValueError, TypeError)


class TestStatsErrors:
    @pytest.mark.parametrize("impl", ["native", pytest.param("triton", marks=needs_triton), "reference"])
    def test_bad_input(self, impl):
        if impl == "native":
            pytest.importorskip("semnorm._C", reason="extension not built")
        x = torch.randn(2, 3, 4, 4)
        mean, rstd = torch.zeros(2, 3), torch.ones(2, 3)
        g = torch.zeros_like(x)
        noise, scale = make_noise(x)
        with pytest.raises(ValueError, match="x must have 4 dimensions"):
            F.channel_moments(x[0], True, impl=impl)
        with pytest.raises(TypeError, match="x must be a floating point"):
            F.norm_stats(x.long(), impl=impl)
        with pytest.raises(ValueError, match="x must not be empty"):
            F.norm_stats(x[:0], impl=impl)
        with pytest.raises(ValueError, match="norm must be one of"):
            F.norm_stats(x, "group", impl=impl)
        with pytest.raises(ValueError, match="noise and noise_scale must be given together"):
            F.channel_moments(x, True, noise, impl=impl)
        with pytest.raises(ValueError, match=r"noise must have shape \(2, 4, 4\)"):
            F.norm_stats(x, noise=noise[:, :2], noise_scale=scale, impl=impl)
        with pytest.raises(TypeError, match="noise_scale must have dtype torch.float32"):
            F.norm_stats(x, noise=noise, noise_scale=scale.double(), impl=impl)
        with pytest.raises(ValueError, match=r"running_var must have shape \(3,\)"):
            F.norm_stats(x, running_mean=torch.zeros(3), running_var=torch.ones(4), impl=impl)
        with pytest.raises(ValueError, match="running_mean and running_var must be given together"):
            F.norm_stats(x, running_mean=torch.zeros(3), impl=impl)
        with pytest.raises(ValueError, match="not supported with norm='instance'"):
            F.norm_stats(x, "instance", running_mean=torch.zeros(3), running_var=torch.ones(3), impl=impl)
        with pytest.raises(ValueError, match=r"mean must have shape \(2, 3\)"):
            F.normalize_modulate(x, mean[0], rstd, g, g, impl=impl)
        with pytest.raises(TypeError, match="rstd must have dtype torch.float32"):
            F.normalize_modulate(x, mean, rstd.double(), g, g, impl=impl)
        with pytest.raises(ValueError, match=r"gamma must have shape \(2, 3, 4, 4\)"):
            F.normalize_modulate(x, mean, rstd, g[:, :1], g, impl=impl)
        with pytest.raises(TypeError, match="beta must have x's dtype"):
            F.normalize_modulate(x, mean, rstd, g, g.double(), impl=impl)
        with pytest.raises(ValueError, match="gamma2 and beta2 and blend must be given together"):
            F.normalize_modulate(x, mean, rstd, g, g, gamma2=g, impl=impl)
        with pytest.raises(ValueError, match=r"blend must have shape \(2,\)"):
            F.normalize_modulate(x, mean, rstd, g, g, gamma2=g, beta2=g, blend=torch.ones(3), impl=impl)

    @pytest.mark.parametrize("impl", KERNEL_IMPLS)
    def test_kernel_checks_itself(self, impl):
        # Bypass the Python layer: the kernels validate their arguments on their own.
        x = torch.randn(2, 3, 4, 4)
        mean, rstd = torch.zeros(2, 3), torch.ones(2, 3)
        g = torch.zeros_like(x)
        noise, scale = make_noise(x)
        ops = semnorm._extension.op_namespace(impl)
        err = kernel_errors(impl)
        with pytest.raises(err, match="semnorm.channel_moments: x must have 4 dimensions"):
            ops.channel_moments(x[0], True)
        with pytest.raises(err, match="semnorm.channel_moments: x must be a floating point tensor"):
            ops.channel_moments(x.long(), True)
        with pytest.raises(err, match="semnorm.channel_moments: noise and noise_scale must be given together"):
            ops.channel_moments(x, True, noise)
        with pytest.raises(err, match="semnorm.channel_moments: noise_scale must have shape"):
            ops.channel_moments(x, True, noise, scale[:2])
        with pytest.raises(err, match="semnorm.channel_moments: noise must have dtype"):
            ops.channel_moments(x, True, noise.double(), scale)
        with pytest.raises(err, match="semnorm.channel_moments_backward: grad_mean must have shape"):
            ops.channel_moments_backward(mean, mean[0], x, mean[0], False)
        with pytest.raises(err, match="semnorm.channel_moments_backward: mean must have dtype"):
            ops.channel_moments_backward(mean, mean, x, mean.double(), True)
        with pytest.raises(err, match="semnorm.normalize_modulate: rstd must have dtype"):
            ops.normalize_modulate(x, mean, rstd.double(), g, g)
        with pytest.raises(err, match="semnorm.normalize_modulate: mean must have shape"):
            ops.normalize_modulate(x, mean[:1], rstd, g, g)
        with pytest.raises(err, match="semnorm.normalize_modulate: gamma must have shape"):
            ops.normalize_modulate(x, mean, rstd, g[:1], g)
        with pytest.raises(err, match="semnorm.normalize_modulate: beta must have dtype"):
            ops.normalize_modulate(x, mean, rstd, g, g.half())
        with pytest.raises(err, match="gamma2, beta2 and blend must be given together"):
            ops.normalize_modulate(x, mean, rstd, g, g, g, None, torch.ones(2))
        with pytest.raises(err, match="semnorm.normalize_modulate: blend must have shape"):
            ops.normalize_modulate(x, mean, rstd, g, g, g, g, torch.ones(3))
        with pytest.raises(err, match="semnorm.normalize_modulate: blend must have dtype"):
            ops.normalize_modulate(x, mean, rstd, g, g, g, g, torch.ones(2, dtype=torch.float64))
        with pytest.raises(err, match="semnorm.normalize_modulate: noise and noise_scale must be given together"):
            ops.normalize_modulate(x, mean, rstd, g, g, None, None, None, None, scale)
        with pytest.raises(err, match="semnorm.normalize_modulate_backward: grad_y must have shape"):
            ops.normalize_modulate_backward(g[:1], x, mean, rstd, g, g, None, None, None, None, None, 1.0)
        with pytest.raises(err, match="semnorm.normalize_modulate_backward: grad_y must have dtype"):
            ops.normalize_modulate_backward(g.double(), x, mean, rstd, g, g, None, None, None, None, None, 1.0)
