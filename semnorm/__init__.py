"""semnorm: fast, exact, drop-in semantic normalization for image synthesis.

``semnorm.functional`` holds the label-indexed ops (each a ``torch.ops.semnorm`` custom op with a
pure-PyTorch reference); the layer modules build on them.
"""

from __future__ import annotations

from . import functional, reference
from ._extension import LOADED as has_extension
from ._extension import native_devices, set_default_impl

__version__ = "0.1.0"

__all__ = ["functional", "reference", "has_extension", "native_devices", "set_default_impl", "__version__"]
from .nn import SPADE  # noqa: E402
__all__ += ["SPADE"]
