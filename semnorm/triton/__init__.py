"""Triton kernels of the label-indexed op family, behind ``torch.ops.semnorm_triton``.

One module per op family (kernels ``_<op>_..._kernel``, launchers, and the registration of the
launchers as the CUDA and CPU implementations of the mirrored ``semnorm_triton`` schemas). Fake
kernels and autograd come from :mod:`semnorm.ops`, shared with the native kernels, so a Triton op
differentiates through its Triton backward op. CPU tensors run only under ``TRITON_INTERPRET=1``
(the test suite sets it); select the backend with ``impl="triton"`` or ``SEMNORM_IMPL=triton``.
"""

from __future__ import annotations

from .._extension import LOADED, TRITON_INSTALLED

AVAILABLE = LOADED and TRITON_INSTALLED

if AVAILABLE:
    from . import class_modulate, label_conv, region  # noqa: F401
    from . import stats  # noqa: F401
    from . import semantic  # noqa: F401
    from . import positional  # noqa: F401
