"""SC-GAN layers (SCN, SCC): published checkpoints load, and outputs and gradients match eager
implementations of the published formulation (matmul + split + permute; sum_k v_k * conv_k(x))."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import semnorm
from semnorm import SCC, SCN
from semnorm import functional as F

IMPLS = [None, "reference"]
K = 4


def vectors_like(n, k, h, w, temperature=0.5):
    return F.semantic_vectors(torch.randn(n, k, h, w) * 4, temperature)


# ----------------------------------------------------------------------------------------------
# SCN


def published_scn(p, x, vectors, norm="batch", running=(None, None), training=True):
    """The published SCN: param-free norm, then [gamma; beta] = vectors (NHWK) @ bank (K, 2C),
    permuted back to NCHW and split; ``N(x) * (1 + gamma) + beta``."""
    if norm == "instance":
        normalized = TF.instance_norm(x, eps=1e-5)
    else:
        normalized = TF.batch_norm(x, *running, training=training, momentum=0.1, eps=1e-5)
    params = torch.matmul(vectors.permute(0, 2, 3, 1), p["affine_params_groups"]).permute(0, 3, 1, 2)
    gamma, beta = params.split(x.shape[1], dim=1)
    return normalized * (1 + gamma) + beta


def scn_state_dict(c, k, norm="batch"):
    sd = {"affine_params_groups": torch.randn(k, 2 * c)}
    if norm != "instance":
        sd.update({"param_free_norm.running_mean": torch.randn(c) * 0.1,
                   "param_free_norm.running_var": torch.rand(c) + 0.5,
                   "param_free_norm.num_batches_tracked": torch.tensor(7)})
    return sd


def compare_scn(layer, sd, x, vectors, norm="batch", training=True, atol=2e-5):
    p = {k: (v.clone().requires_grad_() if v.is_floating_point() else v.clone()) for k, v in sd.items()}
    running = (p.get("param_free_norm.running_mean"), p.get("param_free_norm.running_var"))
    if running[0] is not None:
        running = tuple(t.detach() for t in running)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    v1, v2 = vectors.clone().requires_grad_(), vectors.clone().requires_grad_()
    y = layer(x1, v1)
    ref = published_scn(p, x2, v2, norm, running, training)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=atol)
    g = torch.randn_like(ref)
    (y * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=atol * 10)
    torch.testing.assert_close(v1.grad, v2.grad, rtol=1e-4, atol=atol * 10)
    torch.testing.assert_close(layer.affine_params_groups.grad, p["affine_params_groups"].grad, rtol=1e-4, atol=1e-3)
    if running[0] is not None and training:
        torch.testing.assert_close(layer.param_free_norm.running_mean, running[0])
        torch.testing.assert_close(layer.param_free_norm.running_var, running[1])
    return y


@pytest.mark.parametrize("norm", ["batch", "instance", "syncbatch"])
def test_scn_names_and_init(norm):
    layer = SCN(8, K, norm=norm)
    sd = scn_state_dict(8, K, norm)
    assert set(layer.state_dict()) == set(sd)
    assert layer.affine_params_groups.shape == (K, 16) and torch.all(layer.affine_params_groups == 0)
    layer.load_state_dict(sd, strict=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", ["batch", "instance", "syncbatch"])
@pytest.mark.parametrize("hw", [(8, 8), (5, 7)])
def test_scn_matches_published(impl, norm, hw):
    layer = SCN(6, K, norm=norm, impl=impl)
    sd = scn_state_dict(6, K, norm)
    layer.load_state_dict(sd, strict=True)
    compare_scn(layer, sd, torch.randn(2, 6, *hw), vectors_like(2, K, *hw), norm)


@pytest.mark.parametrize("impl", IMPLS)
def test_scn_eval_running_stats(impl):
    layer = SCN(6, K, impl=impl)
    sd = scn_state_dict(6, K)
    layer.load_state_dict(sd, strict=True)
    layer.eval()
    compare_scn(layer, sd, torch.randn(2, 6, 4, 4) * 2 + 1, vectors_like(2, K, 4, 4), training=False)
    assert int(layer.param_free_norm.num_batches_tracked) == 7


def test_scn_fused_vs_reference_channels_last_autocast():
    sd = scn_state_dict(8, K)
    fused, ref = SCN(8, K), SCN(8, K, impl="reference")
    fused.load_state_dict(sd)
    ref.load_state_dict(sd)
    x, v = torch.randn(3, 8, 6, 6), vectors_like(3, K, 6, 6)
    y = fused(x, v)
    torch.testing.assert_close(y, ref(x, v), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused(x.contiguous(memory_format=torch.channels_last),
                                     v.contiguous(memory_format=torch.channels_last)), y, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_bf = fused(x, v)
    torch.testing.assert_close(y_bf.float(), y, rtol=5e-2, atol=5e-2)
    y_bf = fused(x.bfloat16(), v)
    assert y_bf.dtype == torch.bfloat16
    torch.testing.assert_close(y_bf.float(), y, rtol=5e-2, atol=5e-2)


def test_scn_errors():
    layer = SCN(4, K)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(torch.randn(1, 4, 1, 1), vectors_like(1, K, 1, 1))
    with pytest.raises(ValueError, match="vectors must have shape"):
        layer(torch.randn(2, 4, 8, 8), vectors_like(2, K, 4, 4))
    with pytest.raises(ValueError, match="vectors"):
        layer(torch.randn(2, 4, 8, 8), vectors_like(2, K + 1, 8, 8))
    with pytest.raises(ValueError, match="num_vectors"):
        SCN(4, 0)
    assert semnorm.SCN is SCN


@pytest.mark.parametrize("impl", IMPLS)
def test_scn_compile_fullgraph(impl):
    torch._dynamo.reset()
    sd = scn_state_dict(4, K)
    layer, eager = SCN(4, K, impl=impl), SCN(4, K, impl=impl)
    layer.load_state_dict(sd)
    eager.load_state_dict(sd)
    compiled = torch.compile(layer, fullgraph=True)
    x, v = torch.randn(2, 4, 6, 6), vectors_like(2, K, 6, 6)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = compiled(x1, v), eager(x2, v)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    y1.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.affine_params_groups.grad, eager.affine_params_groups.grad, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# SCC


def published_bases(cin, cout, k, spectral, kernel_size=3):
    convs = []
    for _ in range(k):
        conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)
        convs.append(nn.utils.spectral_norm(conv) if spectral else conv)
    return nn.ModuleList(convs)


def published_scc(bases, x, vectors):
    """The published SCC: each expert conv on x, weighted by its semantic vector, summed."""
    return sum(vectors[:, k:k + 1] * conv(x) for k, conv in enumerate(bases))


@pytest.mark.parametrize("spectral", [False, True])
def test_scc_names(spectral):
    layer = SCC(5, 6, K, spectral=spectral)
    pub = nn.Module()
    pub.conv_bases = published_bases(5, 6, K, spectral)
    assert set(layer.state_dict()) == set(pub.state_dict())
    if spectral:
        assert "conv_bases.0.weight_orig" in layer.state_dict() and "conv_bases.3.weight_v" in layer.state_dict()
    layer.load_state_dict(pub.state_dict(), strict=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("spectral", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kernel_size", [3, 1])
def test_scc_matches_published(impl, spectral, training, kernel_size):
    pub = nn.Module()
    pub.conv_bases = published_bases(5, 6, K, spectral, kernel_size)
    layer = SCC(5, 6, K, kernel_size=kernel_size, spectral=spectral, impl=impl)
    layer.load_state_dict(pub.state_dict(), strict=True)
    layer.train(training)
    pub.train(training)
    x, v = torch.randn(2, 5, 7, 9), vectors_like(2, K, 7, 9)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    v1, v2 = v.clone().requires_grad_(), v.clone().requires_grad_()
    y, ref = layer(x1, v1), published_scc(pub.conv_bases, x2, v2)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    (y * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(v1.grad, v2.grad, rtol=1e-4, atol=1e-4)
    mine, theirs = dict(layer.named_parameters()), dict(pub.named_parameters())
    assert set(mine) == set(theirs)
    for name in mine:
        torch.testing.assert_close(mine[name].grad, theirs[name].grad, rtol=1e-4, atol=1e-4, msg=name)
    # spectral norm's power iteration advanced the same way (u, v buffers)
    for (name, a), (_, b) in zip(layer.state_dict().items(), pub.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_scc_channels_last_autocast_and_errors():
    layer = SCC(4, 3, K)
    x, v = torch.randn(2, 4, 6, 6), vectors_like(2, K, 6, 6)
    y = layer(x, v)
    torch.testing.assert_close(layer(x.contiguous(memory_format=torch.channels_last), v), y, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_bf = layer(x, v)
    assert y_bf.dtype == torch.bfloat16
    torch.testing.assert_close(y_bf.float(), y, rtol=5e-2, atol=5e-2)
    with pytest.raises(ValueError, match="vectors must have shape"):
        layer(x, vectors_like(2, K, 3, 3))
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(2, 5, 6, 6), v)
    with pytest.raises(ValueError, match="kernel_size"):
        SCC(4, 3, K, kernel_size=2)
    assert semnorm.SCC is SCC


def test_scc_fused_vs_reference():
    fused, ref = SCC(4, 3, K, spectral=True), SCC(4, 3, K, spectral=True, impl="reference")
    ref.load_state_dict(fused.state_dict())
    fused.eval()
    ref.eval()
    x, v = torch.randn(2, 4, 6, 6), vectors_like(2, K, 6, 6)
    torch.testing.assert_close(fused(x, v), ref(x, v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spectral", [False, True])
def test_scc_compile_fullgraph(spectral):
    torch._dynamo.reset()
    layer = SCC(4, 3, K, spectral=spectral)
    eager = SCC(4, 3, K, spectral=spectral)
    eager.load_state_dict(layer.state_dict())
    compiled = torch.compile(layer, fullgraph=True)
    x, v = torch.randn(2, 4, 6, 6), vectors_like(2, K, 6, 6)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = compiled(x1, v), eager(x2, v)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    y1.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-4)
    for (name, a), (_, b) in zip(layer.state_dict().items(), eager.state_dict().items()):  # power iteration
        torch.testing.assert_close(a, b, msg=name)
