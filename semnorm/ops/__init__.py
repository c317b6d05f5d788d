"""The op layer: fake (meta) kernels and autograd formulas of every ``torch.ops.semnorm`` op.

Importing this package registers them; the schemas and the compiled kernels come from
``semnorm._C`` (see ``csrc/semnorm.cpp``). Without the extension nothing is registered and the
functional API runs the pure-PyTorch reference.
"""

from . import region  # noqa: F401
from . import stats  # noqa: F401
from . import class_modulate  # noqa: F401
from . import label_conv  # noqa: F401
from . import semantic  # noqa: F401
from . import positional  # noqa: F401
