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


def devices():
    out = [torch.device("cpu")]
    if torch.cuda.is_available():
        out.append(torch.device("cuda"))
    return out


