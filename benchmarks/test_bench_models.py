"""Whole generators: semnorm layers against the same network with the published eager layers
(benchmarks/published.py ``PublishedLayers``) and with semnorm's pure-PyTorch reference, side by
side in one run.

- ``training step``: forward + L1 loss + backward in training mode, at a reduced output size
  (:data:`TRAIN_SIZE`) of the papers' generators (ngf 64, 151 classes for SPADE / CLADE on ADE20K,
  19 classes and 512-dim style codes for SEAN on CelebAMask-HQ, spectral norm, sync-batch norm =
  batch norm on one process).
- ``inference``: one 256 x 256 image in eval mode without autograd, the setting of the CLADE
  paper's runtime tables (SPADE and CLADE on ADE20K); the report sets the SPADE / CLADE runtime
  ratio beside the paper's (Table 2: 4.104 s / 1.710 s on one CPU thread).

``SEMNORM_BENCH_SIZE=small`` shrinks every network to a launch-bound toy (what CI runs, untimed).
"""

from __future__ import annotations

import pytest
import torch
from bench_env import SMALL, THREADS, peak_memory

from published import PublishedLayers
from semnorm.models import build_generator, set_impl
from semnorm.testing import natural_labels

#: (batch, output size) of the timed training step at spec size
TRAIN_SIZE = (1, 128)
#: (batch, output size) of the inference benchmark: the CLADE paper's runtime setting
INFERENCE_SIZE = (1, 256)
#: timed rounds per case (after one warm-up): a step takes seconds, and a shared machine's noise is
#: a sizeable share of the difference the layers make, so a median of 3 can flip a ratio near 1
ROUNDS = 5
PRESETS = {"SPADE": ("spade", "ade20k"), "CLADE": ("clade", "ade20k"), "SEAN": ("sean", "celebamask_hq")}
MODES = {"training step": ["SPADE", "CLADE", "SEAN"], "inference": ["SPADE", "CLADE"]}
CASES = [(mode, name) for mode, names in MODES.items() for name in names]


def _setting(name: str, mode: str):
    kind, preset = PRESETS[name]
    n, size = (1, 64) if SMALL else (TRAIN_SIZE if mode == "training step" else INFERENCE_SIZE)
    overrides = dict(crop_size=size)
    if SMALL:
        overrides.update(ngf=4, hidden=16, style_dim=16, style_ngf=4)
    net = build_generator(kind, preset, **overrides)
    num_classes = net.config.num_classes
    labels = natural_labels(n, size, size, num_classes)
    image = torch.rand(n, 3, size, size) * 2 - 1 if kind == "sean" else None
    return net, num_classes, labels, image


@pytest.mark.parametrize("provider", ["published", "reference", "native"])
@pytest.mark.parametrize("mode,name", CASES, ids=[f"{m.replace(' ', '_')}-{n}" for m, n in CASES])
def test_generator(benchmark, mode, name, provider):
    torch.manual_seed(0)
    net, num_classes, labels, image = _setting(name, mode)
    training = mode == "training step"
    net.train(training)
    set_impl(net, "reference" if provider == "reference" else None)
    patch = PublishedLayers(net, num_classes) if provider == "published" else None
    target = torch.zeros(labels.shape[0], 3, *labels.shape[-2:])

    def step():
        if patch is not None:
            patch.new_step()  # the published data pipeline builds the one-hot map every step
        with torch.set_grad_enabled(training):
            out = net(labels, image) if image is not None else net(labels)
            if not training:
                return out
            net.zero_grad(set_to_none=True)
            loss = (out - target).abs().mean()
            loss.backward()
            return loss

    benchmark.group = f"generator {name} {mode} cpu"
    benchmark.extra_info.update(op=f"generator {name}", provider=provider, mode=mode, device="cpu",
                                threads=THREADS, small=SMALL,
                                shape=f"{PRESETS[name][1]} preset, batch {labels.shape[0]}, "
                                      f"{labels.shape[-2]}x{labels.shape[-1]}, ngf {net.config.ngf}, "
                                      f"{num_classes} classes")
    if patch is not None:
        patch.__enter__()
    try:
        result = benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=1, iterations=1)
        assert torch.isfinite(result).all()
        benchmark.extra_info["peak_bytes"] = peak_memory(step, labels.device)
    finally:
        if patch is not None:
            patch.__exit__(None, None, None)
