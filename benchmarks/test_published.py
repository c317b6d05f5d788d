"""The published-style baselines compute what semnorm computes: a benchmark ratio is only meaningful
when both sides give the same answer. Plain tests (no timing), run with the suite and in CI."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import published
from semnorm import CLADE, SCN, SEAN, SPADE
from semnorm import functional as F
from semnorm.models import build_generator
from semnorm.testing import natural_labels

TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture
def labels():
    torch.manual_seed(0)
    return natural_labels(2, 24, 20, 7)


def _x(c=8, h=12, w=10):
    return torch.randn(2, c, h, w)


def test_ops(labels):
    seg = published.onehot(labels, 7)
    x = _x()
    weight, bias = torch.rand(7, 8), torch.randn(7, 8)
    mean, rstd = F.norm_stats(x, "batch")
    assert_close(published.class_modulate(x, seg, weight, bias),
                 F.class_modulate(x, mean, rstd, labels, weight, bias), **TOL)
    codes, _ = F.region_pool(x, labels, 7, True)
    assert_close(published.region_pool(x, seg), codes, **TOL)
    table = torch.randn(2, 7, 5)
    assert_close(published.region_broadcast(table, seg, (12, 10)), F.region_broadcast(table, labels, 12, 10), **TOL)
    w3 = torch.randn(4, 7, 3, 3)
    assert_close(published.label_conv(seg, w3, None, (12, 10)), F.label_conv(labels, w3, None, size=(12, 10)), **TOL)
    w5 = torch.randn(4, 5, 3, 3)
    assert_close(published.region_conv(table, seg, w5, (12, 10)), F.region_conv(table, labels, w5, size=(12, 10)), **TOL)


@pytest.mark.parametrize("name", ["SPADE", "CLADE", "SEAN", "SEAN mask-only", "SCN"])
def test_layers(labels, name):
    x = _x()
    seg = published.onehot(labels, 7)
    if name == "SPADE":
        layer = SPADE(8, 7, hidden=16)
        ours, theirs = layer(x, labels), published.spade_layer(layer, x, seg)
    elif name == "CLADE":
        layer = CLADE(8, 7)
        torch.nn.init.normal_(layer.class_specified_affine.bias)
        ours, theirs = layer(x, labels), published.clade_layer(layer, x, seg)
    elif name.startswith("SEAN"):
        layer = SEAN(8, 7, style_dim=6, hidden=16, use_style=name == "SEAN")
        torch.nn.init.normal_(layer.noise_var)
        style, noise = torch.randn(2, 7, 6), torch.randn(2, 12, 10)
        ours = layer(x, labels, style, noise=noise)
        theirs = published.sean_layer(layer, x, seg, style, noise)
    else:
        layer = SCN(8, 3)
        torch.nn.init.normal_(layer.affine_params_groups, std=0.1)
        vectors = torch.softmax(torch.randn(2, 3, 12, 10), 1)
        ours, theirs = layer(x, vectors), published.scn_layer(layer, x, vectors)
    assert_close(theirs, ours, **TOL)


@pytest.mark.parametrize("kind,preset", [("spade", "ade20k"), ("clade", "ade20k"), ("sean", "celebamask_hq")])
def test_generators(kind, preset):
    """PublishedLayers replaces every semnorm layer of a generator and the network's output is unchanged."""
    torch.manual_seed(0)
    net = build_generator(kind, preset, crop_size=32, ngf=2, hidden=8, style_dim=8, style_ngf=2).train()
    num_classes = net.config.num_classes
    labels = natural_labels(2, 32, 32, num_classes)
    image = torch.rand(2, 3, 32, 32) if kind == "sean" else None

    state = {k: v.clone() for k, v in net.state_dict().items()}

    def run():
        net.load_state_dict(state)  # spectral norm's power iteration updates u and v in training mode
        torch.manual_seed(1)  # SEAN draws its noise: the same draws on both paths
        return net(labels, image) if image is not None else net(labels)

    ours = run()
    patch = published.PublishedLayers(net, num_classes)
    with patch:
        assert patch._patched, "no layer was replaced"
        theirs = run()
    assert not any("forward" in vars(m) for m in net.modules()), "the patch was not undone"
    assert_close(theirs, ours, **TOL)
