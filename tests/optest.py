"""Shared machinery of the op tests: dtypes with tolerances, memory layouts, label edge cases.

Each op's test module compares the native kernels with the reference over the same grid of cases,
so the grid lives here once.
"""

from __future__ import annotations

import pytest
import torch

import semnorm
from semnorm.testing import natural_labels

needs_ext = pytest.mark.skipif(not semnorm.has_extension, reason="semnorm._C is not built (SEMNORM_SKIP_EXT=1 or a failed build)")
needs_triton = pytest.mark.skipif(
    "cpu" not in semnorm.triton_devices(),
    reason="Triton kernels cannot run on CPU tensors here (need triton installed, the extension built, TRITON_INTERPRET=1)",
)
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or "cuda" not in semnorm.native_devices(),
    reason="no CUDA device, or this build has no CUDA kernels",
)

# The kernel backends checked against the reference: compiled (C++ on the CPU) and Triton (run by the
# Triton interpreter on the CPU; tests/conftest.py sets TRITON_INTERPRET=1).
KERNEL_IMPLS = [pytest.param("native", marks=needs_ext), pytest.param("triton", marks=needs_triton)]

# Devices for the kernel tests: CUDA runs only where a GPU is present.
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]

# (rtol, atol) for comparing native and reference results in each dtype. Low precision outputs are
# rounded once from float32 accumulators, so they may differ by one ulp of the output.
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-2),
    torch.float16: (2e-3, 2e-3),
}

LAYOUTS = ["contiguous", "channels_last", "strided"]


def assert_close(actual, expected, dtype=None, scale=1.0, **kw):
    dtype = dtype or expected.dtype
    rtol, atol = TOL.get(dtype, TOL[torch.float32])
    torch.testing.assert_close(actual, expected, rtol=rtol * scale, atol=atol * scale, check_dtype=True, **kw)


def make_x(shape, dtype=torch.float32, layout="contiguous", requires_grad=False):
    """Random activations in the given memory layout (values identical across layouts)."""
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # a non-contiguous view: every other column of a wider tensor
        wide = torch.zeros(*shape[:-1], shape[-1] * 2, dtype=dtype)
        wide[..., ::2] = x
        x = wide[..., ::2]
        assert not x.is_contiguous()
    return x.requires_grad_(requires_grad)


# Label-map cases: (name, function(N, H, W, L) -> labels). Labels may be at another resolution than x.
def _one_label(n, h, w, num_classes):
    return torch.full((n, h, w), num_classes - 1, dtype=torch.int64)


def _every_label(n, h, w, num_classes):
    return (torch.arange(n * h * w) % num_classes).view(n, h, w)


def _absent_labels(n, h, w, num_classes):  # only even classes present
    return (torch.randint(0, (num_classes + 1) // 2, (n, h, w)) * 2).clamp(max=num_classes - 1)


LABEL_CASES = {
    "natural": lambda n, h, w, num_classes: natural_labels(n, h, w, num_classes, classes_per_image=min(4, num_classes)),
    "random": lambda n, h, w, num_classes: torch.randint(0, num_classes, (n, h, w)),
    "one_label": _one_label,
    "every_label": _every_label,
    "absent_labels": _absent_labels,
}

# (x spatial size, label spatial size): equal, coarser, finer, 2x, odd, 1x1.
RESOLUTIONS = [((8, 8), (8, 8)), ((8, 12), (4, 6)), ((6, 10), (17, 23)), ((7, 9), (14, 18)), ((5, 3), (5, 3)), ((1, 1), (1, 1)), ((3, 5), (1, 1))]

LABEL_DTYPES = [torch.int64, torch.int32, torch.uint8]
