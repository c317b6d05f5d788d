"""The benchmarked ops: inputs at the SPEC section 6 shapes (or small ones), the providers that
compute each op, and the bytes its minimal algorithm must move.

Providers: ``published`` (the eager style of the published code, benchmarks/published.py),
``reference`` (semnorm's vectorized eager reference), ``compiled`` (that reference under
``torch.compile``), ``native`` (semnorm's C++ kernels on the CPU, CUDA kernels on a GPU) and
``triton`` (semnorm's Triton kernels; timed on CUDA tensors only).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable

import torch

import published
from semnorm import functional as F
from semnorm import reference as R
from semnorm.testing import natural_labels

Inputs = dict[str, object]
Run = Callable[[Inputs], tuple[torch.Tensor, ...]]


@dataclass
class OpCase:
    name: str
    shape: str
    make: Callable[[bool, torch.device], Inputs]  # (small, device) -> inputs
    providers: dict[str, Run]
    grad: list[str]  # inputs that take gradients in the forward+backward benchmark
    nbytes: Callable[[Inputs], int]  # bytes the minimal forward algorithm reads and writes
    compile_ok: bool = True
    extra: dict = field(default_factory=dict)
    # bytes the minimal backward reads and writes (the output gradient, what it needs of the inputs, the
    # input gradients; per-class tables and statistics are negligible); None: not differentiable
    backward_bytes: Callable[[Inputs], int] | None = None


def _size(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _map_bytes(a: Inputs, channels: int) -> int:
    """Bytes of an (N, channels, H, W) float32 map at the case's output size."""
    return a["labels"].shape[0] * channels * a["size"][0] * a["size"][1] * 4


def _combined_bytes(a: Inputs) -> int:
    """Bytes of candidate_combine's output: one of the K stacked candidate maps."""
    return _size(a["candidates"]) // a["candidates"].shape[1]


def _x(small, device, c=256, shape=None):
    """Activations: the layer-target shape (4, c, 64, 64), another SPEC shape, or the small one."""
    if small:
        return torch.randn(2, c // 4, 32, 32, device=device)
    return torch.randn(shape or (4, c, 64, 64), device=device)


def _labels(small, device, num_classes):
    n, h, w = (2, 64, 64) if small else (4, 256, 256)
    return natural_labels(n, h, w, num_classes, device=device)


def _with_impl(fn, impl):
    return lambda a: fn(a, impl)


def _ops(fn) -> dict[str, Run]:
    """Reference, compiled reference, native and Triton providers of a functional call ``fn(inputs, impl)``."""
    compiled = torch.compile(lambda a: fn(a, "reference"), dynamic=False)
    return {"reference": _with_impl(fn, "reference"), "compiled": compiled, "native": _with_impl(fn, "native"),
            "triton": _with_impl(fn, "triton")}


def _batch_stats(x, impl):
    """x's batch statistics as semnorm's layers take them (ParamFreeNorm.stats): computed without a
    graph, their gradient folded into the modulate op's grad_x (``stats_of_x="batch"``)."""
    with torch.no_grad():
        return F.norm_stats(x, "batch", impl=impl)


def _norm(a, impl):
    mean, rstd = _batch_stats(a["x"], impl)
    return (F.normalize_modulate(a["x"], mean, rstd, a["gamma"], a["beta"], stats_of_x="batch", impl=impl),)


def _make_norm(small, device, shape=None):
    x = _x(small, device, shape=shape)
    return {"x": x, "gamma": 0.1 * torch.randn_like(x), "beta": 0.1 * torch.randn_like(x)}


def _clade(a, impl):
    mean, rstd = _batch_stats(a["x"], impl)
    return (F.class_modulate(a["x"], mean, rstd, a["labels"], a["weight"], a["bias"], stats_of_x="batch", impl=impl),)


def _make_clade(small, device, shape=None):
    x = _x(small, device, shape=shape)
    labels = _labels(small, device, 151)
    return {"x": x, "labels": labels, "seg": published.onehot(labels, 151), "weight": torch.rand(151, x.shape[1], device=device),
            "bias": 0.1 * torch.randn(151, x.shape[1], device=device)}


def _make_pool(small, device, shape=None):
    labels = _labels(small, device, 19)
    return {"x": _x(small, device, 512, shape), "labels": labels, "seg": published.onehot(labels, 19)}


def _make_broadcast(small, device, shape=None):
    """Codes (N, 19, C) to an (N, C, H, W) map; ``shape`` is that map's (N, C, H, W)."""
    labels = _labels(small, device, 19)
    n = labels.shape[0]
    c, size = (128, (32, 32)) if small else ((shape[1], tuple(shape[2:])) if shape else (512, (64, 64)))
    return {"codes": torch.randn(n, 19, c, device=device), "labels": labels,
            "seg": published.onehot(labels, 19), "size": size}


def _make_label_conv(small, device):
    labels = _labels(small, device, 151)
    return {"labels": labels, "seg": published.onehot(labels, 151), "weight": 0.02 * torch.randn(128, 151, 3, 3, device=device),
            "bias": torch.zeros(128, device=device), "size": (32, 32) if small else (64, 64)}


def _make_region_conv(small, device):
    a = _make_broadcast(small, device)
    a["weight"] = 0.02 * torch.randn(64 if small else 256, a["codes"].shape[2], 3, 3, device=device)
    return a


def _make_scn(small, device, shape=None):
    x = _x(small, device, shape=shape)
    n, c, h, w = x.shape
    return {"x": x, "vectors": torch.softmax(torch.randn(n, 4, h, w, device=device), 1),
            "bank": 0.1 * torch.randn(4, 2 * c, device=device)}


def _scn(a, impl):
    mean, rstd = _batch_stats(a["x"], impl)
    return (F.semantic_modulate(a["x"], mean, rstd, a["vectors"], a["bank"], stats_of_x="batch", impl=impl),)


def _make_scc(small, device):
    n, c, h, w = _x(small, device).shape
    return {"vectors": torch.softmax(torch.randn(n, 3, h, w, device=device), 1),
            "candidates": torch.randn(n, 3, c, h, w, device=device)}


CASES: list[OpCase] = [
    OpCase("normalize_modulate", "BN + dense (1+gamma, beta), x (4,256,64,64)", _make_norm,
           {"published": lambda a: (published.normalize_modulate(a["x"], a["gamma"], a["beta"]),), **_ops(_norm)},
           ["x", "gamma", "beta"], lambda a: 2 * _size(a["x"]) + _size(a["gamma"]) + _size(a["beta"]),
           # dy, x, gamma read, dx, dgamma written (dbeta is dy itself)
           backward_bytes=lambda a: 3 * _size(a["x"]) + 2 * _size(a["gamma"])),
    OpCase("class_modulate", "CLADE, BN + guided sampling, x (4,256,64,64), labels (4,256,256), L=151", _make_clade,
           {"published": lambda a: (published.class_modulate(a["x"], a["seg"], a["weight"], a["bias"]),), **_ops(_clade)},
           ["x", "weight", "bias"], lambda a: 2 * _size(a["x"]) + _size(a["labels"]),
           backward_bytes=lambda a: 3 * _size(a["x"]) + _size(a["labels"])),
    OpCase("region_pool", "mean per region, x (4,512,64,64), labels (4,256,256), L=19", _make_pool,
           {"published": lambda a: (published.region_pool(a["x"], a["seg"]),),
            **_ops(lambda a, impl: F.region_pool(a["x"], a["labels"], 19, True, impl=impl)[:1])},
           ["x"], lambda a: _size(a["x"]) + _size(a["labels"]),
           backward_bytes=lambda a: _size(a["x"]) + _size(a["labels"])),
    OpCase("region_broadcast", "codes (4,19,512) -> (4,512,64,64)", _make_broadcast,
           {"published": lambda a: (published.region_broadcast(a["codes"], a["seg"], a["size"]),),
            **_ops(lambda a, impl: (F.region_broadcast(a["codes"], a["labels"], *a["size"], impl=impl),))},
           ["codes"], lambda a: _map_bytes(a, a["codes"].shape[2]) + _size(a["labels"]),
           backward_bytes=lambda a: _map_bytes(a, a["codes"].shape[2]) + _size(a["labels"])),
    OpCase("label_conv", "SPADE conv 1: labels (4,256,256), L=151, weight (128,151,3,3), out 64x64", _make_label_conv,
           {"published": lambda a: (published.label_conv(a["seg"], a["weight"], a["bias"], a["size"]),),
            **_ops(lambda a, impl: (F.label_conv(a["labels"], a["weight"], a["bias"], size=a["size"], impl=impl),))},
           ["weight", "bias"], lambda a: _map_bytes(a, a["weight"].shape[0]) + _size(a["labels"]),
           backward_bytes=lambda a: _map_bytes(a, a["weight"].shape[0]) + _size(a["labels"])),
    OpCase("region_conv", "SEAN style conv: codes (4,19,512), weight (256,512,3,3), out 64x64", _make_region_conv,
           {"published": lambda a: (published.region_conv(a["codes"], a["seg"], a["weight"], a["size"]),),
            **_ops(lambda a, impl: (F.region_conv(a["codes"], a["labels"], a["weight"], size=a["size"], impl=impl),))},
           ["codes", "weight"], lambda a: _map_bytes(a, a["weight"].shape[0]),
           backward_bytes=lambda a: _map_bytes(a, a["weight"].shape[0]) + _size(a["labels"])),
    OpCase("semantic_modulate", "SCN, BN + K=4 vectors, x (4,256,64,64)", _make_scn,
           {"published": lambda a: (published.semantic_modulate(a["x"], a["vectors"], a["bank"]),), **_ops(_scn)},
           ["x", "vectors", "bank"], lambda a: 2 * _size(a["x"]) + _size(a["vectors"]),
           backward_bytes=lambda a: 3 * _size(a["x"]) + 2 * _size(a["vectors"])),
    OpCase("candidate_combine", "SCC, K=3 candidates (4,3,256,64,64)", _make_scc,
           {"published": lambda a: (published.candidate_combine(a["vectors"], a["candidates"]),),
            **_ops(lambda a, impl: (F.candidate_combine(a["vectors"], a["candidates"], impl=impl),))},
           ["vectors", "candidates"], lambda a: _combined_bytes(a) + _size(a["candidates"]) + _size(a["vectors"]),
           # dy, vectors, candidates read, dvectors, dcandidates written
           backward_bytes=lambda a: _combined_bytes(a) + 2 * _size(a["candidates"]) + 2 * _size(a["vectors"])),
    OpCase("intra_class_positional", "ICPE map, labels (4,256,256), L=151 (forward only)",
           lambda small, device: {"labels": _labels(small, device, 151)},
           {"published": lambda a: (published.intra_class_positional(a["labels"]),),
            "reference": lambda a: (R.intra_class_positional(a["labels"]),),
            "native": lambda a: (F.intra_class_positional(a["labels"], impl="native"),),
            "triton": lambda a: (F.intra_class_positional(a["labels"], impl="triton"),)},
           [], lambda a: _size(a["labels"]) + a["labels"].numel() * 8, compile_ok=False),
]


#: SPEC section 6's other activation shapes (the ADE20K generator's 256 x 256 and 16 x 16 stages),
#: for the memory-bound ops whose cost follows the activations; labels stay (4, 256, 256)
SPEC_SHAPES = [(4, 128, 256, 256), (4, 1024, 16, 16)]
_AT_SPEC_SHAPES = {  # op: (inputs at a shape, description with {s} for the shape)
    "normalize_modulate": (_make_norm, "BN + dense (1+gamma, beta), x {s}"),
    "class_modulate": (_make_clade, "CLADE, BN + guided sampling, x {s}, labels (4,256,256), L=151"),
    "semantic_modulate": (_make_scn, "SCN, BN + K=4 vectors, x {s}"),
    "region_pool": (_make_pool, "mean per region, x {s}, labels (4,256,256), L=19"),
    "region_broadcast": (_make_broadcast, "codes (4,19,C) -> {s}, labels (4,256,256)"),
}


def _at_shape(case: OpCase, shape: tuple[int, ...]) -> OpCase:
    """The same case with activations (the broadcast's output) of another SPEC shape."""
    make, description = _AT_SPEC_SHAPES[case.name]
    return replace(case, name=f"{case.name} {'x'.join(map(str, shape))}",
                   shape=description.format(s=str(shape).replace(" ", "")), make=partial(make, shape=shape))


#: the ops at the SPEC shapes besides the layer shape (timed runs only: at small size they would repeat)
SHAPE_CASES: list[OpCase] = [_at_shape(c, shape) for shape in SPEC_SHAPES for c in CASES if c.name in _AT_SPEC_SHAPES]
