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

from bench_env import SMALL, THREADS, devices, median_seconds  # noqa: E402


@pytest.fixture(scope="session")
def copy_bandwidth():
    """Device-to-device copy bandwidth (read + write bytes per second) per device, measured once."""
    result = {}
    for device in devices():
        src = torch.randn(16 * 2**20, device=device)  # 64 MiB
        dst = torch.empty_like(src)
        result[device.type] = 2 * src.numel() * 4 / median_seconds(lambda: dst.copy_(src), device)
    return result


def pytest_report_header(config):
    return f"semnorm benchmarks: torch {torch.__version__}, {THREADS} threads, shapes={'small' if SMALL else 'spec'}"
