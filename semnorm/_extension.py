"""Loading of the compiled extension and the choice of implementation per call.

Every op has up to three implementations:

- ``"native"``: the compiled kernels in ``semnorm._C`` (C++ on the CPU, CUDA on NVIDIA GPUs),
  dispatched by device through ``torch.ops.semnorm``;
- ``"triton"``: Triton kernels (``semnorm/triton``) behind ``torch.ops.semnorm_triton``, a mirror of
  the native schemas. They run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (the
  Triton interpreter, used by the test suite);
- ``"reference"``: vectorized pure PyTorch, the oracle and the fallback.

A call picks one with its ``impl`` argument; when that is ``None`` the process-wide default decides
(:func:`set_default_impl`, initialised from the environment variable ``SEMNORM_IMPL``), and when that
is unset the fastest available backend for the tensors' device is used: the native kernels on the
CPU, and on CUDA the backend listed for the op in :data:`CUDA_DEFAULT_IMPL`. Everything here is plain
Python state read at trace time, so ``torch.compile`` sees a constant choice and no graph break.
"""

from __future__ import annotations

import importlib.util
import os

import torch

IMPLS = ("native", "triton", "reference")

try:
    from . import _C  # noqa: F401  (registers torch.ops.semnorm.*)

    LOADED = True
    LOAD_ERROR = ""
except ImportError as exc:  # pure-PyTorch install (SEMNORM_SKIP_EXT=1) or a broken build
    LOADED = False
    LOAD_ERROR = str(exc)

# The Triton ops reuse the native schemas (semnorm/ops/_registry.py), so they need the extension too.
TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Backend used on CUDA tensors when a call says impl=None, per op: whichever measured faster on the
# GPU (benchmarks/results/<device>.md). Ops not listed use "native".
CUDA_DEFAULT_IMPL: dict[str, str] = {}


def _find_native_devices() -> frozenset[str]:
    if not LOADED:
        return frozenset()
    devices = {"cpu"}
    if torch._C._dispatch_has_kernel_for_dispatch_key("semnorm::region_pool", "CUDA"):
        devices.add("cuda")
    return frozenset(devices)


def _find_triton_devices() -> frozenset[str]:
    if not (LOADED and TRITON_INSTALLED):
        return frozenset()
    return frozenset({"cuda", "cpu"} if TRITON_INTERPRET else {"cuda"})


NATIVE_DEVICES = _find_native_devices()
TRITON_DEVICES = _find_triton_devices()
_default_impl: str | None = None


def native_devices() -> frozenset[str]:
    """Device types that have compiled kernels in this build."""
    return NATIVE_DEVICES


def triton_devices() -> frozenset[str]:
    """Device types the Triton kernels can run on here ("cpu" only under ``TRITON_INTERPRET=1``)."""
    return TRITON_DEVICES


def set_default_impl(impl: str | None) -> None:
    """Set the implementation used when a call passes ``impl=None`` (None: automatic)."""
    global _default_impl
    if impl is not None and impl not in IMPLS:
        raise ValueError(f"semnorm: impl must be one of {IMPLS} or None, got {impl!r}")
    _default_impl = impl


def _unavailable(impl: str, device_type: str) -> str:
    if not LOADED:
        return f"the extension did not load ({LOAD_ERROR})"
    if impl == "triton":
        if not TRITON_INSTALLED:
            return "triton is not installed"
        if device_type == "cpu":
            return "Triton runs on CPU tensors only under TRITON_INTERPRET=1 (set before importing semnorm)"
        return f"Triton does not run on {device_type} tensors"
    return f"no {device_type} kernels in this build"


def choose_impl(impl: str | None, device: torch.device, op: str | None = None) -> str:
    """Resolve ``impl`` (None, "native", "triton" or "reference") for op ``op`` on ``device``."""
    if impl is None:
        impl = _default_impl
    if impl is None:
        if device.type == "cuda" and op is not None:
            preferred = CUDA_DEFAULT_IMPL.get(op, "native")
            available = NATIVE_DEVICES if preferred == "native" else TRITON_DEVICES
            if device.type in available:
                return preferred
        if device.type in NATIVE_DEVICES:
            return "native"
        return "triton" if device.type == "cuda" and device.type in TRITON_DEVICES else "reference"
    if impl not in IMPLS:
        raise ValueError(f"semnorm: impl must be one of {IMPLS} or None, got {impl!r}")
    available = {"native": NATIVE_DEVICES, "triton": TRITON_DEVICES}.get(impl)
    if available is not None and device.type not in available:
        raise RuntimeError(f"semnorm: impl={impl!r} requested for {device.type} tensors but {_unavailable(impl, device.type)}")
    return impl


def op_namespace(impl: str):
    """``torch.ops.semnorm`` for the native kernels, ``torch.ops.semnorm_triton`` for Triton."""
    return torch.ops.semnorm_triton if impl == "triton" else torch.ops.semnorm


set_default_impl(os.environ.get("SEMNORM_IMPL") or None)
