"""Machinery shared by every Triton kernel: registration, argument checks, label sampling.

The checks mirror ``csrc/common.h`` (same messages, "semnorm.<op>: <argument> ..."), so a call
through ``torch.ops.semnorm_triton`` rejects bad input as clearly as the native kernels do.
Labels are range-checked on the host side (one reduction and one device sync per call); the
kernels also mask every label read, so an unchecked label can never address memory out of bounds.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import triton
import triton.language as tl

from .._extension import TRITON_INTERPRET
from ..ops._registry import TRITON

LABEL_DTYPES = (torch.uint8, torch.int32, torch.int64)


def register_kernel(name: str, fn: Callable) -> Callable:
    """Register ``fn`` as the implementation of ``semnorm_triton::<name>`` on CUDA and CPU tensors."""

    def on_cpu(*args, **kwargs):
        if not TRITON_INTERPRET:
            raise RuntimeError(
                f"semnorm.{name}: the Triton kernels run on CPU tensors only under TRITON_INTERPRET=1 "
                "(set it before importing semnorm)"
            )
        return fn(*args, **kwargs)

    torch.library.impl(f"{TRITON}::{name}", "CUDA")(fn)
    torch.library.impl(f"{TRITON}::{name}", "CPU")(on_cpu)
    return fn


def fail(op: str, msg: str, exc: type[Exception] = ValueError):
    raise exc(f"semnorm.{op}: {msg}")


def check_stats_of_x(stats_of_x: int, op: str) -> None:
    """The modulate ops' stats_of_x flag (0 independent statistics, 1 instance, 2 batch; see csrc/semnorm.cpp)."""
    if stats_of_x not in (0, 1, 2):
        fail(op, f"stats_of_x must be 0 (independent statistics), 1 (instance) or 2 (batch), got {stats_of_x}", RuntimeError)


def check_activation(x: torch.Tensor, op: str, name: str = "x") -> None:
    if not x.is_floating_point():
        fail(op, f"{name} must be a floating point tensor, got {x.dtype}", TypeError)
    if x.dim() != 4:
        fail(op, f"{name} must have 4 dimensions, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        fail(op, f"{name} must not be empty, got shape {tuple(x.shape)}")


def check_labels(labels: torch.Tensor, batch: int, num_classes: int, device: torch.device, op: str) -> torch.Tensor:
    """Checks dtype, shape (batch, Hl, Wl), device and value range; returns the labels contiguous."""
    if labels.dtype not in LABEL_DTYPES:
        fail(op, f"labels must be an integer tensor (uint8, int32 or int64), got {labels.dtype}", TypeError)
    if labels.dim() != 3:
        fail(op, f"labels must have 3 dimensions, got shape {tuple(labels.shape)}")
    if labels.shape[0] != batch:
        fail(op, f"labels has batch size {labels.shape[0]} but the activations have {batch}")
    if labels.numel() == 0:
        fail(op, f"labels must not be empty, got shape {tuple(labels.shape)}")
    if labels.device != device:
        fail(op, f"labels is on {labels.device} but the activations are on {device}")
    if not 0 < num_classes < 2**31:
        fail(op, f"num_classes must lie in [1, 2^31), got {num_classes}")
    lo, hi = torch.aminmax(labels)
    lo, hi = int(lo), int(hi)  # the one host sync of a call
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise IndexError(f"semnorm.{op}: labels must lie in [0, {num_classes}), found {bad}")
    return labels.contiguous()


def nearest_scale(in_size: int, out_size: int) -> float:
    """``float(in) / float(out)`` rounded once in float32, as PyTorch's nearest rule computes it."""
    return float(np.float32(in_size) / np.float32(out_size))


@triton.jit
def nearest_source(dst, in_size, scale):
    """PyTorch's legacy nearest source index for int32 ``dst`` (``scale`` from :func:`nearest_scale`)."""
    src = (dst.to(tl.float32) * scale).to(tl.int32)
    return tl.minimum(src, in_size - 1)
