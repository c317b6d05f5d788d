"""Loading of the compiled extension and the choice of implementation per call.

Every op has two implementations: ``"native"`` (the compiled kernels in ``semnorm._C``, dispatched
by device through ``torch.ops.semnorm``) and ``"reference"`` (vectorized pure PyTorch, the oracle
and the fallback). A call picks one with its ``impl`` argument; when that is ``None`` the
process-wide default decides (:func:`set_default_impl`, initialised from the environment variable
``SEMNORM_IMPL``), and when that is unset the native kernels are used wherever they are available
for the tensors' device. Everything here is plain Python state read at trace time, so
``torch.compile`` sees a constant choice and no graph break.
"""

from __future__ import annotations

import os

import torch

IMPLS = ("native", "reference")

try:
    from . import _C  # noqa: F401  (registers torch.ops.semnorm.*)

    LOADED = True
    LOAD_ERROR = ""
except ImportError as exc:  # pure-PyTorch install (SEMNORM_SKIP_EXT=1) or a broken build
    LOADED = False
    LOAD_ERROR = str(exc)


def _find_native_devices() -> frozenset[str]:
    if not LOADED:
        return frozenset()
    devices = {"cpu"}
    if torch._C._dispatch_has_kernel_for_dispatch_key("semnorm::region_pool", "CUDA"):
        devices.add("cuda")
    return frozenset(devices)


NATIVE_DEVICES = _find_native_devices()
_default_impl: str | None = None


def native_devices() -> frozenset[str]:
    """Device types that have compiled kernels in this build."""
    return NATIVE_DEVICES


def set_default_impl(impl: str | None) -> None:
    """Set the implementation used when a call passes ``impl=None`` (None: automatic)."""
    global _default_impl
    if impl is not None and impl not in IMPLS:
        raise ValueError(f"semnorm: impl must be one of {IMPLS} or None, got {impl!r}")
    _default_impl = impl


def choose_impl(impl: str | None, device: torch.device) -> str:
    """Resolve ``impl`` (None, "native" or "reference") for tensors on ``device``."""
    if impl is None:
        impl = _default_impl
    if impl is None:
        return "native" if device.type in NATIVE_DEVICES else "reference"
    if impl not in IMPLS:
        raise ValueError(f"semnorm: impl must be one of {IMPLS} or None, got {impl!r}")
    if impl == "native" and device.type not in NATIVE_DEVICES:
        why = f"the extension did not load ({LOAD_ERROR})" if not LOADED else f"no {device.type} kernels in this build"
        raise RuntimeError(f"semnorm: impl='native' requested for {device.type} tensors but {why}")
    return impl


set_default_impl(os.environ.get("SEMNORM_IMPL") or None)
