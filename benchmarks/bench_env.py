"""Benchmark settings shared by the fixtures and the benchmark modules."""

from __future__ import annotations

import os

import torch

THREADS = int(os.environ.get("SEMNORM_BENCH_THREADS", "2"))
SMALL = os.environ.get("SEMNORM_BENCH_SIZE", "spec") == "small"
torch.set_num_threads(THREADS)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def skip_reason(provider: str, device) -> str | None:
    """Why a provider is not timed on a device (None: it is)."""
    if provider == "triton" and device.type != "cuda":
        return "Triton kernels are timed on CUDA tensors only (on the CPU they run under the interpreter, a test tool)"
    return None


def devices():
    out = [torch.device("cpu")]
    if torch.cuda.is_available():
        out.append(torch.device("cuda"))
    return out



def peak_memory(fn, device) -> int:
    """Peak bytes allocated by one call of ``fn`` above what was allocated before it.

    CUDA: the caching allocator's ``max_memory_allocated``. CPU: the allocation and free events of
    torch's CPU allocator recorded by the profiler (``profile_memory=True``), summed in time order;
    memory that Python or the C library allocates outside torch is not counted.
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() == torch._C._autograd.DeviceType.CPU),
        key=lambda e: e.start_ns(),
    )
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak
