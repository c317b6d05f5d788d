"""Benchmark settings shared by the fixtures and the benchmark modules."""

from __future__ import annotations

import os
import statistics
import time

import torch

THREADS = int(os.environ.get("SEMNORM_BENCH_THREADS", "2"))
SMALL = os.environ.get("SEMNORM_BENCH_SIZE", "spec") == "small"
torch.set_num_threads(THREADS)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def wall_seconds(fn, device, repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn()``, synchronizing the device around each."""
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def median_seconds(fn, device, repeats: int = 11) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls."""
    return statistics.median(wall_seconds(fn, device, repeats))


def fresh_output_seconds(outputs, device) -> float:
    """Time to allocate and fill tensors shaped like ``outputs``: the floor of an op that returns them.

    Measured where the op ran (same process, same allocator state): on the CPU a large allocation
    may come fresh from the OS, and its first-touch page faults then cost far more than the writes.
    """
    specs = [(o.shape, o.dtype) for o in outputs]
    return median_seconds(lambda: [torch.empty(shape, dtype=dtype, device=device).fill_(1) for shape, dtype in specs],
                          device, repeats=5)


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
