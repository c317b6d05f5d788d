"""Benchmark fixtures: fixed threads, the device, and the copy bandwidth measured in the same run.

``pytest benchmarks`` runs the suite; ``SEMNORM_BENCH_SIZE=small`` uses small shapes (what CI runs,
with ``--benchmark-disable``, so that a broken benchmark cannot land).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from bench_env import SMALL, THREADS, devices, wall_seconds  # noqa: E402


@pytest.fixture(scope="session")
def copy_bandwidth():
    """Peak copy bandwidth per device (read + write bytes per second): the fastest of 21 copies of 64 MiB
    between reused buffers, measured once per run (the fastest, not the median: the reference for "% of
    copy" is what the memory system can do, and a noisy neighbour only ever slows a copy down)."""
    result = {}
    for device in devices():
        src = torch.randn(16 * 2**20, device=device)  # 64 MiB
        dst = torch.empty_like(src)
        result[device.type] = 2 * src.numel() * 4 / min(wall_seconds(lambda: dst.copy_(src), device, 21))
    return result


def pytest_report_header(config):
    return f"semnorm benchmarks: torch {torch.__version__}, {THREADS} threads, shapes={'small' if SMALL else 'spec'}"
