"""One registration for both kernel namespaces.

``torch.ops.semnorm`` holds the compiled kernels (schemas in ``csrc/semnorm.cpp``);
``torch.ops.semnorm_triton`` mirrors those schemas, op for op, for the Triton kernels in
``semnorm/triton``. The fake kernel and the autograd formula of an op are the same whichever backend
computes it, so each op module registers them once through :func:`register`, and a backward formula
receives the namespace it must call its backward op in.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from .._extension import LOADED

NATIVE = "semnorm"
TRITON = "semnorm_triton"


def _mirror_native_schemas() -> torch.library.Library:
    lib = torch.library.Library(TRITON, "DEF")
    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith(NATIVE + "::"))
    for qualname in names:
        name = qualname.split("::", 1)[1]
        schema = str(getattr(torch.ops.semnorm, name).default._schema)
        lib.define(schema.split("::", 1)[1])
    return lib


NAMESPACES: tuple[str, ...] = (NATIVE, TRITON) if LOADED else ()
_triton_lib = _mirror_native_schemas() if LOADED else None


def register(
    name: str,
    fake: Callable,
    backward: Callable | None = None,
    setup_context: Callable | None = None,
) -> None:
    """Register ``fake`` and (optionally) autograd for op ``name`` in every kernel namespace.

    ``backward(ops, ctx, *grads)`` gets ``ops`` = ``torch.ops.<namespace>`` of the op being
    differentiated, so the native op's gradient runs native kernels and the Triton op's runs Triton.
    """
    for ns in NAMESPACES:
        torch.library.register_fake(f"{ns}::{name}", fake)
        if backward is not None:
            ops = getattr(torch.ops, ns)
            torch.library.register_autograd(
                f"{ns}::{name}", functools.partial(backward, ops), setup_context=setup_context
            )
