"""The op layer: fake (meta) kernels and autograd formulas of every semnorm op.

Importing this package registers them for both kernel namespaces (``torch.ops.semnorm``, compiled
kernels; ``torch.ops.semnorm_triton``, Triton kernels, see ``_registry.py``); the schemas come from
``semnorm._C`` (``csrc/semnorm.cpp``). Without the extension nothing is registered and the
functional API runs the pure-PyTorch reference.
"""

from . import region  # noqa: F401
from . import stats  # noqa: F401
from . import class_modulate  # noqa: F401
from . import label_conv  # noqa: F401
from . import semantic  # noqa: F401
from . import positional  # noqa: F401

from .. import triton as _triton  # noqa: F401,E402  (registers the Triton kernels, when triton is installed)
