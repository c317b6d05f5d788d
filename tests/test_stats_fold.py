"""``stats_of_x``: the norm statistics' gradient folded into the modulate ops' grad_x.

With ``stats_of_x`` the modulate ops (normalize_modulate, class_modulate, semantic_modulate) take
x's own statistics, computed without a graph, and add the statistics' gradient to grad_x in place
(semnorm/ops/stats.py, ``fold_stats_grad``). Every backend must give what the differentiable chain
``norm_stats -> modulate`` gives: the same forward bit for bit, the same gradients for x, noise,
noise_scale and the parameters.
"""

from __future__ import annotations

import pytest
import torch
from optest import DEVICES, KERNEL_IMPLS, assert_close, needs_ext

import semnorm
from semnorm import CLADE, SCN, SEAN, SPADE
from semnorm import functional as F
from semnorm.nn import ParamFreeNorm
from semnorm.reference import opmath_dtype
from semnorm.testing import natural_labels

IMPLS = KERNEL_IMPLS + ["reference"]
OPS = ["normalize_modulate", "normalize_modulate_blend", "normalize_modulate_noise", "class_modulate",
       "semantic_modulate"]
KINDS = ["instance", "batch"]


def make_case(op, dtype, device, shape=(3, 5, 7, 6)):
    """(x, params): x and the op's differentiable inputs (leaves), labels among params for CLADE."""
    n, c, h, w = shape
    acc = opmath_dtype(dtype)
    gen = torch.Generator().manual_seed(hash(op) % 1000)

    def randn(*s, dt=dtype, scale=1.0, shift=0.0):
        t = (torch.randn(*s, generator=gen, dtype=torch.float64) * scale + shift).to(dt).to(device)
        return t.requires_grad_()

    x = randn(n, c, h, w, scale=2.0, shift=0.5)
    if op.startswith("normalize_modulate"):
        p = {"gamma": randn(n, c, h, w, scale=0.5), "beta": randn(n, c, h, w)}
        if op.endswith("blend"):
            p.update(gamma2=randn(n, c, h, w, scale=0.5), beta2=randn(n, c, h, w),
                     blend=torch.tensor([0.3, 0.8], dtype=acc, device=device, requires_grad=True))
        if op.endswith("noise"):
            p.update(noise=randn(n, h, w, dt=acc), noise_scale=randn(c, dt=acc, scale=0.3))
    elif op == "class_modulate":
        p = {"labels": natural_labels(n, 2 * h + 1, 2 * w - 1, 6).to(device), "weight": randn(6, c, dt=acc),
             "bias": randn(6, c, dt=acc)}
    else:
        vectors = torch.softmax(torch.randn(n, 4, h, w, generator=gen, dtype=torch.float64), 1).to(dtype).to(device)
        p = {"vectors": vectors.requires_grad_(), "bank": randn(4, 2 * c, dt=acc, scale=0.3)}
    return x, p


def modulate(op, x, mean, rstd, p, impl, stats_of_x):
    if op.startswith("normalize_modulate"):
        kw = {k: p[k] for k in ("gamma2", "beta2", "blend", "noise", "noise_scale") if k in p}
        return F.normalize_modulate(x, mean, rstd, p["gamma"], p["beta"], offset=1.0, stats_of_x=stats_of_x,
                                    impl=impl, **kw)
    if op == "class_modulate":
        return F.class_modulate(x, mean, rstd, p["labels"], p["weight"], p["bias"], offset=0.25,
                                stats_of_x=stats_of_x, impl=impl)
    return F.semantic_modulate(x, mean, rstd, p["vectors"], p["bank"], offset=1.0, stats_of_x=stats_of_x, impl=impl)


def statistics(x, p, kind, impl):
    return F.norm_stats(x, kind, noise=p.get("noise"), noise_scale=p.get("noise_scale"), impl=impl)


def run(op, x, p, kind, impl, fold, grad_y):
    """(y, gradients of every differentiable input) through the fold or through the chain."""
    if fold:
        with torch.no_grad():
            mean, rstd = statistics(x, p, kind, impl)
    else:
        mean, rstd = statistics(x, p, kind, impl)
    y = modulate(op, x, mean, rstd, p, impl, kind if fold else None)
    leaves = [x] + [t for t in p.values() if t.requires_grad]
    return y, torch.autograd.grad(y, leaves, grad_y)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fold_matches_chain(op, kind, impl, device, dtype):
    x, p = make_case(op, dtype, device)
    grad_y = torch.randn(x.shape, dtype=torch.float64).to(dtype).to(device)
    y_chain, g_chain = run(op, x, p, kind, impl, False, grad_y)
    y_fold, g_fold = run(op, x, p, kind, impl, True, grad_y)
    assert torch.equal(y_fold, y_chain)  # same kernel, same statistics
    for a, b in zip(g_fold, g_chain):
        assert_close(a, b, scale=10)  # a sum in another order


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", ["normalize_modulate_noise", "class_modulate", "semantic_modulate"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fold_low_precision_no_worse_than_chain(op, impl, dtype):
    """Both paths against the float64 truth: the fold's error at most twice the chain's (plus an ulp)."""
    x, p = make_case(op, dtype, "cpu")
    grad_y = torch.randn(x.shape, dtype=torch.float64)
    x64, p64 = make_case(op, torch.float64, "cpu")
    _, truth = run(op, x64, p64, "batch", "reference", False, grad_y)
    _, g_chain = run(op, x, p, "batch", impl, False, grad_y.to(dtype))
    _, g_fold = run(op, x, p, "batch", impl, True, grad_y.to(dtype))
    for f, c, t in zip(g_fold, g_chain, truth):
        err_fold = (f.double() - t).abs().max().item()
        err_chain = (c.double() - t).abs().max().item()
        ulp = 2 ** -7 if dtype == torch.bfloat16 else 2 ** -10
        assert err_fold <= 2 * err_chain + ulp * t.abs().max().item(), (err_fold, err_chain)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", OPS)
def test_gradcheck_float64(op, kind, impl):
    """Statistics recomputed from x inside the function (without a graph): the numerical Jacobian sees
    them move with x, so only a correct fold passes."""
    x, p = make_case(op, torch.float64, "cpu", shape=(2, 3, 4, 3))
    keys = [k for k, t in p.items() if t.requires_grad]

    def f(x, *vals):
        q = dict(p, **dict(zip(keys, vals)))
        with torch.no_grad():
            mean, rstd = statistics(x, q, kind, impl)
        return modulate(op, x, mean, rstd, q, impl, kind)

    assert torch.autograd.gradcheck(f, (x, *(p[k] for k in keys)), fast_mode=impl == "triton")


@pytest.mark.parametrize("impl", KERNEL_IMPLS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", ["normalize_modulate_noise", "class_modulate", "semantic_modulate"])
def test_opcheck(op, kind, impl):
    ops = semnorm._extension.op_namespace(impl)
    x, p = make_case(op, torch.float32, "cpu", shape=(2, 3, 4, 5))
    with torch.no_grad():
        mean, rstd = statistics(x, p, kind, "reference")
    code = semnorm.ops.stats.STATS_OF_X[kind]
    if op == "class_modulate":
        torch.library.opcheck(ops.class_modulate.default,
                              (x, mean, rstd, p["labels"], p["weight"], p["bias"], None, None, 0.25, code))
    elif op == "semantic_modulate":
        torch.library.opcheck(ops.semantic_modulate.default, (x, mean, rstd, p["vectors"], p["bank"], 1.0, code))
    else:
        torch.library.opcheck(ops.normalize_modulate.default,
                              (x, mean, rstd, p["gamma"], p["beta"], None, None, None, p["noise"], p["noise_scale"],
                               1.0, code))


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_stats_of_x_names_the_argument(impl):
    x, p = make_case("normalize_modulate", torch.float32, "cpu")
    mean, rstd = statistics(x, p, "batch", "reference")
    for bad in ("channel", 2, ["batch"]):
        with pytest.raises(ValueError, match="stats_of_x"):
            modulate("normalize_modulate", x, mean, rstd, p, impl, bad)


@needs_ext
@pytest.mark.parametrize("impl", KERNEL_IMPLS)
def test_ops_check_the_code(impl):
    ops = semnorm._extension.op_namespace(impl)
    x, p = make_case("semantic_modulate", torch.float32, "cpu")
    mean, rstd = statistics(x, p, "batch", "reference")
    with pytest.raises(RuntimeError, match="stats_of_x"):
        ops.semantic_modulate(x, mean.detach(), rstd.detach(), p["vectors"], p["bank"], 1.0, 3)


@pytest.mark.parametrize("norm", ["batch", "instance", "syncbatch"])
def test_param_free_norm_stats(norm):
    """Which statistics fold, and the running statistics updated exactly as by forward()."""
    x = torch.randn(3, 4, 5, 6, requires_grad=True)
    a, b = ParamFreeNorm(4, norm), ParamFreeNorm(4, norm)
    mean, rstd, kind = a.stats(x)
    ref_mean, ref_rstd = b(x)
    assert kind == ("instance" if norm == "instance" else "batch")
    assert not mean.requires_grad and not rstd.requires_grad
    assert torch.equal(mean, ref_mean) and torch.equal(rstd, ref_rstd)
    for name, buf in a.named_buffers():
        assert torch.equal(buf, dict(b.named_buffers())[name])
    with torch.no_grad():
        assert a.stats(x)[2] is None
    if norm != "instance":
        a.eval()
        mean, rstd, kind = a.stats(x)
        assert kind is None
        assert torch.allclose(rstd[0], torch.rsqrt(a.running_var + a.eps))


def _layer_case(name):
    torch.manual_seed(0)
    n, c, h, w = 2, 8, 8, 8
    labels = natural_labels(n, 16, 16, 5)
    x = torch.randn(n, c, h, w, requires_grad=True)
    if name == "SPADE":
        return SPADE(c, 5), (x, labels), {}
    if name == "CLADE":
        return CLADE(c, 5), (x, labels), {}
    if name == "SCN":
        layer = SCN(c, 3)
        torch.nn.init.normal_(layer.affine_params_groups, std=0.2)
        return layer, (x, torch.softmax(torch.randn(n, 3, h, w), 1)), {}
    layer = SEAN(c, 5, style_dim=6)
    return layer, (x, labels, torch.randn(n, 5, 6)), {"noise": torch.randn(n, h, w)}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["SPADE", "CLADE", "SCN", "SEAN"])
def test_layers_fold_matches_chain(name, impl, monkeypatch):
    """Each layer's gradients with folded statistics equal those of the plain chain."""
    layer, args, kw = _layer_case(name)
    layer.impl = impl
    if name == "SEAN":
        torch.nn.init.normal_(layer.noise_var, std=0.5)  # a live noise_scale gradient path

    def grads():
        layer.zero_grad(set_to_none=True)
        args[0].grad = None
        y = layer(*args, **kw)
        y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
        return [args[0].grad] + [p.grad for p in layer.parameters() if p.grad is not None]

    folded = grads()
    monkeypatch.setattr(ParamFreeNorm, "stats", lambda self, x, noise=None, noise_scale=None, impl=None:
                        (*self(x, noise, noise_scale, impl), None))
    chained = grads()
    assert len(folded) == len(chained)
    for a, b in zip(folded, chained):
        assert_close(a, b, scale=10)
