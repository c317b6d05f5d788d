"""semnorm: fast, exact, drop-in semantic normalization for image synthesis.

``semnorm.functional`` holds the label-indexed ops (each a ``torch.ops.semnorm`` custom op with a
pure-PyTorch reference); the drop-in layers (``SPADE``, ``CLADE``, ``SEAN``, ``SCN``, ``SCC``) build
on them and keep the published parameter names.
"""

from __future__ import annotations

from . import functional, reference
from ._extension import LOADED as has_extension
from ._extension import native_devices, set_default_impl, triton_devices
from .nn import CLADE, SCC, SCN, SEAN, SPADE, ParamFreeNorm, region_style_codes

__version__ = "0.1.0"

__all__ = [
    "SPADE", "CLADE", "SEAN", "SCN", "SCC", "ParamFreeNorm", "region_style_codes",
    "functional", "reference", "has_extension", "native_devices", "triton_devices", "set_default_impl",
    "__version__",
]
