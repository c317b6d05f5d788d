"""Every op, forward and forward+backward, for every provider: ``pytest benchmarks``.

Each result records, besides the times, the peak memory of one call (bench_env.peak_memory), the
bytes the minimal algorithm must move (forward, or forward and backward), the achieved GB/s and its
share of the copy bandwidth measured in the same run, and for the forward the time that allocating
and filling tensors shaped like its outputs takes there (the floor of an op that returns a large
tensor). The output gradients of the backward are made once, outside the timed step.
"""

from __future__ import annotations

import pytest
import torch
from cases import CASES, SHAPE_CASES
from bench_env import SMALL, THREADS, devices, fresh_output_seconds, peak_memory, skip_reason, sync

PROVIDERS = ["published", "reference", "compiled", "native", "triton"]


def _leaves(inputs, names):
    return {k: (v.detach().clone().requires_grad_() if k in names else v) for k, v in inputs.items()}


@pytest.mark.parametrize("device", devices(), ids=lambda d: d.type)
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", CASES + ([] if SMALL else SHAPE_CASES), ids=lambda c: c.name.replace(" ", "-"))
def test_op(benchmark, copy_bandwidth, case, provider, mode, device):
    if provider not in case.providers:
        pytest.skip(f"{case.name} has no {provider} provider (not differentiable or not compilable)")
    if skip_reason(provider, device):
        pytest.skip(skip_reason(provider, device))
    if mode == "forward+backward" and not case.grad:
        pytest.skip(f"{case.name} is not differentiable")
    torch.manual_seed(0)
    inputs = case.make(SMALL, device)
    run = case.providers[provider]
    names = case.grad if mode == "forward+backward" else []

    # the output gradients are made once, outside the timed step: they stand for what the next layer's
    # backward hands over, not for work of the op (a fresh output-sized fill per round would be timed)
    grads = [torch.ones_like(o) for o in run(_leaves(inputs, names))] if names else None

    def setup():
        return (_leaves(inputs, names),), {}

    def step(leaves):
        outs = run(leaves)
        if names:
            torch.autograd.backward(outs, grads)
        sync(device)
        return outs

    benchmark.group = f"{case.name} {mode} {device.type}"
    # at small shapes the case's description (written for the SPEC shapes) is replaced by the actual ones
    shape = case.shape if not SMALL else ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items()
                                                   if isinstance(v, torch.Tensor) and k != "seg")
    benchmark.extra_info.update(op=case.name, provider=provider, mode=mode, device=device.type, shape=shape, threads=THREADS,
                                small=SMALL)
    outs = benchmark.pedantic(step, setup=setup, rounds=5, warmup_rounds=1, iterations=1)
    leaves = _leaves(inputs, names)
    benchmark.extra_info["peak_bytes"] = peak_memory(lambda: step(leaves), device)
    if benchmark.stats is not None:
        seconds = benchmark.stats.stats.median
        nbytes = case.nbytes(inputs) + (case.backward_bytes(inputs) if names else 0)
        benchmark.extra_info.update(bytes=nbytes, gbps=nbytes / seconds / 1e9,
                                    pct_copy=100 * nbytes / seconds / copy_bandwidth[device.type],
                                    copy_bandwidth=copy_bandwidth[device.type])
        if mode == "forward":
            benchmark.extra_info.update(out_bytes=sum(o.numel() * o.element_size() for o in outs),
                                        fresh_output_floor=fresh_output_seconds(outs, device))
