"""Argument checks shared by the functional API: every error names the argument at fault.

The compiled kernels repeat the essential checks (shape, dtype, label range) in C++, so the native
path is safe even when called through ``torch.ops.semnorm`` directly; these Python checks give the
reference path the same behaviour and the same messages.
"""

from __future__ import annotations

import torch

from .reference import opmath_dtype

LABEL_DTYPES = (torch.uint8, torch.int32, torch.int64)


def fail(op: str, message: str, exc: type[Exception] = ValueError) -> None:
    raise exc(f"semnorm.{op}: {message}")


def activation(x: torch.Tensor, op: str, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        fail(op, f"{name} must be a tensor, got {type(x).__name__}", TypeError)
    if not x.is_floating_point():
        fail(op, f"{name} must be a floating point tensor, got {x.dtype}", TypeError)
    if x.dim() != 4:
        fail(op, f"{name} must have 4 dimensions (N, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        fail(op, f"{name} must not be empty, got shape {tuple(x.shape)}")


def same_device(op: str, ref: torch.Tensor, ref_name: str, **tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.device != ref.device:
            fail(op, f"{ref_name} is on {ref.device} but {name} is on {t.device}")


def shape(t: torch.Tensor, expected: tuple[int, ...], op: str, name: str) -> None:
    if tuple(t.shape) != tuple(expected):
        fail(op, f"{name} must have shape {tuple(expected)}, got {tuple(t.shape)}")


def labels(labels: torch.Tensor, batch: int, op: str, num_classes: int | None = None, check_values: bool = True) -> None:
    """Integer (N, Hl, Wl) labels; with ``check_values`` (the reference path) also the value range."""
    label_map(labels, op, check_values=False)
    if labels.shape[0] != batch:
        fail(op, f"labels has batch size {labels.shape[0]} but the activations have {batch}")
    if num_classes is not None:
        if num_classes <= 0:
            fail(op, f"num_classes must be positive, got {num_classes}")
        if check_values and not torch.compiler.is_compiling():
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= num_classes:
                bad = lo if lo < 0 else hi
                fail(op, f"labels must lie in [0, {num_classes}), found {bad}", IndexError)


def like_x(t: torch.Tensor, x: torch.Tensor, op: str, name: str) -> None:
    """A dense tensor with x's shape, dtype and device."""
    if not isinstance(t, torch.Tensor):
        fail(op, f"{name} must be a tensor, got {type(t).__name__}", TypeError)
    if t.dtype != x.dtype:
        fail(op, f"{name} must have x's dtype {x.dtype}, got {t.dtype}", TypeError)
    shape(t, tuple(x.shape), op, name)
    same_device(op, x, "x", **{name: t})


def together(op: str, **tensors: torch.Tensor | None) -> None:
    """Optional arguments that must be given all together or not at all."""
    given = [name for name, t in tensors.items() if t is not None]
    if given and len(given) != len(tensors):
        fail(op, f"{' and '.join(tensors)} must be given together, got only {', '.join(given)}")


def opmath_tensor(t: torch.Tensor, x: torch.Tensor, expected: tuple[int, ...], op: str, name: str) -> None:
    """A float tensor of shape ``expected`` in x's opmath dtype on x's device (statistics, tables, maps)."""
    if not isinstance(t, torch.Tensor):
        fail(op, f"{name} must be a tensor, got {type(t).__name__}", TypeError)
    if t.device != x.device:
        fail(op, f"x is on {x.device} but {name} is on {t.device}")
    shape(t, expected, op, name)
    want = opmath_dtype(x.dtype)
    if t.dtype != want:
        fail(op, f"{name} must have dtype {want} (the opmath dtype of x's {x.dtype}), got {t.dtype}", TypeError)


def stats(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, op: str) -> None:
    """mean / rstd: (N, C) in x's opmath dtype on x's device."""
    opmath_tensor(mean, x, tuple(x.shape[:2]), op, "mean")
    opmath_tensor(rstd, x, tuple(x.shape[:2]), op, "rstd")


def class_table(t: torch.Tensor, x: torch.Tensor, op: str, name: str) -> None:
    """A per-class parameter table (L, C) with C = x.size(1), L >= 1, in x's opmath dtype."""
    if not isinstance(t, torch.Tensor):
        fail(op, f"{name} must be a tensor, got {type(t).__name__}", TypeError)
    if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] != x.shape[1]:
        fail(op, f"{name} must have shape (L, {x.shape[1]}) with L >= 1 (C = x.size(1)), got {tuple(t.shape)}")
    opmath_tensor(t, x, tuple(t.shape), op, name)


def pixel_map(t: torch.Tensor | None, x: torch.Tensor, op: str, name: str) -> None:
    """Optional per-pixel (N, H, W) map in x's opmath dtype."""
    if t is not None:
        opmath_tensor(t, x, (x.shape[0], x.shape[2], x.shape[3]), op, name)


def floating(t: torch.Tensor, op: str, name: str, dim: int | None = None) -> None:
    """A non-empty floating point tensor (with ``dim`` dimensions when given)."""
    if not isinstance(t, torch.Tensor):
        fail(op, f"{name} must be a tensor, got {type(t).__name__}", TypeError)
    if not t.is_floating_point():
        fail(op, f"{name} must be a floating point tensor, got {t.dtype}", TypeError)
    if dim is not None and t.dim() != dim:
        fail(op, f"{name} must have {dim} dimensions, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        fail(op, f"{name} must not be empty, got shape {tuple(t.shape)}")


def dtype(t: torch.Tensor, expected: torch.dtype, op: str, name: str) -> None:
    if t.dtype != expected:
        fail(op, f"{name} must have dtype {expected}, got {t.dtype}", TypeError)


def label_map(labels: torch.Tensor, op: str, check_values: bool = True) -> None:
    """Integer (N, H, W) non-empty labels with no upper bound; with ``check_values`` also non-negative."""
    if not isinstance(labels, torch.Tensor):
        fail(op, f"labels must be a tensor, got {type(labels).__name__}", TypeError)
    if labels.dtype not in LABEL_DTYPES:
        fail(op, f"labels must be an integer tensor (uint8, int32 or int64), got {labels.dtype}", TypeError)
    if labels.dim() != 3:
        fail(op, f"labels must have 3 dimensions (N, H, W), got shape {tuple(labels.shape)}")
    if labels.numel() == 0:
        fail(op, f"labels must not be empty, got shape {tuple(labels.shape)}")
    if check_values and not torch.compiler.is_compiling():
        lo = int(labels.min())
        if lo < 0:
            fail(op, f"labels must be non-negative, found {lo}")


def region_codes(codes: torch.Tensor, op: str, layout: str = "(N, L, C)") -> None:
    """Per-region codes: a non-empty floating point tensor of 3 dimensions."""
    if not isinstance(codes, torch.Tensor) or not codes.is_floating_point():
        fail(op, f"codes must be a floating point tensor, got {getattr(codes, 'dtype', type(codes).__name__)}", TypeError)
    if codes.dim() != 3 or codes.numel() == 0:
        fail(op, f"codes must be a non-empty {layout} tensor, got shape {tuple(codes.shape)}")
