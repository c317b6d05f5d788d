"""Whole layers, forward+backward in training mode: semnorm's layer against the published eager
formulation on the same parameters (and its torch.compile), at the SPEC section 6 shapes."""

from __future__ import annotations

import pytest
import torch
from bench_env import SMALL, THREADS, peak_memory, sync

import published
from semnorm import CLADE, SCN, SEAN, SPADE
from semnorm.testing import natural_labels


def _setting(name):
    n, c, h, w = (2, 32, 32, 32) if SMALL else (4, 256, 64, 64)
    hl = 64 if SMALL else 256
    num_classes = 19 if name == "SEAN" else 151
    labels = natural_labels(n, hl, hl, num_classes)
    seg = published.onehot(labels, num_classes)
    x = torch.randn(n, c, h, w)
    if name == "SPADE":
        layer = SPADE(c, num_classes)
        return layer, (x, labels), (x, seg), published.spade_layer
    if name == "CLADE":
        layer = CLADE(c, num_classes)
        return layer, (x, labels), (x, seg), published.clade_layer
    if name == "SCN":
        layer = SCN(c, 4)
        torch.nn.init.normal_(layer.affine_params_groups, std=0.1)
        vectors = torch.softmax(torch.randn(n, 4, h, w), 1)
        return layer, (x, vectors), (x, vectors), published.scn_layer
    style_dim = 64 if SMALL else 512
    layer = SEAN(c, num_classes, style_dim=style_dim)
    style = torch.randn(n, num_classes, style_dim)
    noise = torch.randn(n, h, w)
    return layer, (x, labels, style, noise), (x, seg, style, noise), published.sean_layer


@pytest.mark.parametrize("provider", ["published", "compiled", "semnorm"])
@pytest.mark.parametrize("name", ["SPADE", "CLADE", "SEAN", "SCN"])
def test_layer(benchmark, name, provider):
    torch.manual_seed(0)
    layer, ours, theirs, eager = _setting(name)
    layer.train()
    if provider == "semnorm":
        def call(x, *rest):
            if name == "SEAN":
                return layer(x, rest[0], rest[1], noise=rest[2])
            return layer(x, *rest)
        args = ours
    else:
        call = (lambda *a: eager(layer, *a)) if provider == "published" else torch.compile(lambda *a: eager(layer, *a))
        args = theirs

    def setup():
        return ((args[0].detach().clone().requires_grad_(),) + tuple(args[1:]),), {}

    def step(a):
        layer.zero_grad(set_to_none=True)
        out = call(*a)
        out.backward(torch.ones_like(out))
        sync(a[0].device)

    benchmark.group = f"layer {name} forward+backward cpu"
    benchmark.extra_info.update(op=f"layer {name}", provider={"semnorm": "native"}.get(provider, provider),
                                mode="forward+backward", device="cpu", threads=THREADS, small=SMALL,
                                shape=f"x {tuple(ours[0].shape)}, {'vectors' if name == 'SCN' else 'labels'} {tuple(ours[1].shape)}")
    benchmark.pedantic(step, setup=setup, rounds=5, warmup_rounds=1, iterations=1)
    (a,), _ = setup()
    benchmark.extra_info["peak_bytes"] = peak_memory(lambda: step(a), a[0].device)
