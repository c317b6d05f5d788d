"""Whole layers, forward+backward in training mode: semnorm's layer against the published eager
formulation on the same parameters (and its torch.compile), at the SPEC section 6 shapes, on every
device (the CPU, and CUDA when a GPU is present, where semnorm's Triton kernels are timed too)."""

from __future__ import annotations

import pytest
import torch
from bench_env import SMALL, THREADS, devices, peak_memory, skip_reason, sync

import published
from semnorm import CLADE, SCN, SEAN, SPADE
from semnorm.testing import natural_labels

#: timed rounds per layer (after one warm-up): layers are the SPEC targets, and on a shared machine
#: the published layers' allocation-heavy eager code varies by up to 2x between runs of 5
ROUNDS = 9


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


@pytest.mark.parametrize("device", devices(), ids=lambda d: d.type)
@pytest.mark.parametrize("provider", ["published", "compiled", "native", "triton"])
@pytest.mark.parametrize("name", ["SPADE", "CLADE", "SEAN", "SCN"])
def test_layer(benchmark, name, provider, device):
    if skip_reason(provider, device):
        pytest.skip(skip_reason(provider, device))
    torch.manual_seed(0)
    layer, ours, theirs, eager = _setting(name)
    layer.train().to(device)
    ours, theirs = [tuple(t.to(device) for t in args) for args in (ours, theirs)]
    if provider in ("native", "triton"):
        layer.impl = provider

        def call(x, *rest):
            if name == "SEAN":
                return layer(x, rest[0], rest[1], noise=rest[2])
            return layer(x, *rest)
        args = ours
    else:
        call = (lambda *a: eager(layer, *a)) if provider == "published" else torch.compile(lambda *a: eager(layer, *a))
        args = theirs

    # made once, outside the timed step (every layer's output has x's shape): it stands for the gradient
    # that the next layer hands over
    grad = torch.ones_like(args[0])

    def setup():
        return ((args[0].detach().clone().requires_grad_(),) + tuple(args[1:]),), {}

    def step(a):
        layer.zero_grad(set_to_none=True)
        out = call(*a)
        out.backward(grad)
        sync(a[0].device)

    benchmark.group = f"layer {name} forward+backward {device.type}"
    benchmark.extra_info.update(op=f"layer {name}", provider=provider,
                                mode="forward+backward", device=device.type, threads=THREADS, small=SMALL,
                                shape=f"x {tuple(ours[0].shape)}, {'vectors' if name == 'SCN' else 'labels'} {tuple(ours[1].shape)}")
    benchmark.pedantic(step, setup=setup, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    (a,), _ = setup()
    benchmark.extra_info["peak_bytes"] = peak_memory(lambda: step(a), a[0].device)
