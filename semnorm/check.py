"""Run every op forward and backward, compiled kernel against reference: ``python -m semnorm.check``.

For each op of the family it builds inputs at the SPEC section 6 shapes (or smaller with
``--quick``), runs the native kernels and the pure-PyTorch reference on the same inputs and the same
output gradients, and prints the largest error of every output and input gradient (relative to the
reference's largest magnitude) and the forward+backward time of both, measured side by side.
Exits non-zero when an error exceeds its tolerance.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import _extension
from . import functional as F
from .testing import natural_labels

Inputs = dict[str, object]


@dataclass
class Case:
    name: str
    make: Callable[[bool], Inputs]  # quick -> inputs (float tensors are leaves that may require grad)
    run: Callable[[Inputs, str], tuple[torch.Tensor, ...]]  # (inputs, impl) -> outputs
    shape: str


def _x(quick: bool, channels: int | None = None) -> torch.Tensor:
    n, c, h, w = (2, 64, 32, 32) if quick else (4, 256, 64, 64)
    return torch.randn(n, channels or c, h, w)


def _labels(quick: bool, num_classes: int) -> torch.Tensor:
    n, h, w = (2, 64, 64) if quick else (4, 256, 256)
    return natural_labels(n, h, w, num_classes)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean((0, 2, 3))
    rstd = torch.rsqrt(x.var((0, 2, 3), unbiased=False) + 1e-5)
    n, c = x.shape[:2]
    return mean.expand(n, c).contiguous(), rstd.expand(n, c).contiguous()


def _modulate_inputs(quick: bool, **extra: torch.Tensor) -> Inputs:
    x = _x(quick)
    mean, rstd = _stats(x)
    return {"x": x, "mean": mean, "rstd": rstd, **extra}


def _norm_inputs(quick: bool) -> Inputs:
    x = _x(quick)
    return {"x": x, "gamma": 0.1 * torch.randn_like(x), "beta": 0.1 * torch.randn_like(x)}


def _norm_run(a: Inputs, impl: str) -> tuple[torch.Tensor, ...]:
    mean, rstd = F.norm_stats(a["x"], "batch", impl=impl)
    return (F.normalize_modulate(a["x"], mean, rstd, a["gamma"], a["beta"], offset=1.0, impl=impl),)


def _clade_inputs(quick: bool) -> Inputs:
    c = _x(quick).shape[1]
    return _modulate_inputs(quick, labels=_labels(quick, 151), weight=torch.rand(151, c), bias=0.1 * torch.randn(151, c))


def _sean_conv_inputs(quick: bool) -> Inputs:
    n, cin, cout = (2, 64, 32) if quick else (4, 512, 256)
    return {"codes": torch.randn(n, 19, cin), "labels": _labels(quick, 19), "weight": 0.02 * torch.randn(cout, cin, 3, 3),
            "size": (32, 32) if quick else (64, 64)}


def _scn_inputs(quick: bool) -> Inputs:
    x = _x(quick)
    n, c, h, w = x.shape
    mean, rstd = _stats(x)
    return {"x": x, "mean": mean, "rstd": rstd, "vectors": torch.softmax(torch.randn(n, 4, h, w), 1),
            "bank": 0.1 * torch.randn(4, 2 * c)}


def _scc_inputs(quick: bool) -> Inputs:
    n, c, h, w = _x(quick).shape
    return {"vectors": torch.softmax(torch.randn(n, 3, h, w), 1), "candidates": torch.randn(n, 3, c, h, w)}


CASES: list[Case] = [
    Case("norm_stats+normalize_modulate", _norm_inputs, _norm_run,
         "batch norm + dense (1 + gamma, beta), x (4,256,64,64)"),
    Case("class_modulate (CLADE)", _clade_inputs,
         lambda a, impl: (F.class_modulate(a["x"], a["mean"], a["rstd"], a["labels"], a["weight"], a["bias"], impl=impl),),
         "x (4,256,64,64), labels (4,256,256), L=151"),
    Case("region_pool (mean)", lambda quick: {"x": _x(quick, 64 if quick else 512), "labels": _labels(quick, 19)},
         lambda a, impl: F.region_pool(a["x"], a["labels"], 19, True, impl=impl)[:1],
         "x (4,512,64,64), labels (4,256,256), L=19"),
    Case("region_broadcast",
         lambda quick: {"codes": torch.randn(2 if quick else 4, 19, 64 if quick else 512), "labels": _labels(quick, 19),
                        "size": (32, 32) if quick else (64, 64)},
         lambda a, impl: (F.region_broadcast(a["codes"], a["labels"], *a["size"], impl=impl),),
         "codes (4,19,512) -> (4,512,64,64), L=19"),
    Case("label_conv (SPADE conv 1)",
         lambda quick: {"labels": _labels(quick, 151), "weight": 0.02 * torch.randn(128, 151, 3, 3),
                        "bias": torch.zeros(128), "size": (32, 32) if quick else (64, 64)},
         lambda a, impl: (F.label_conv(a["labels"], a["weight"], a["bias"], size=a["size"], impl=impl),),
         "labels (4,256,256), L=151, weight (128,151,3,3), out 64x64"),
    Case("region_conv (SEAN style conv)", _sean_conv_inputs,
         lambda a, impl: (F.region_conv(a["codes"], a["labels"], a["weight"], size=a["size"], impl=impl),),
         "codes (4,19,512), weight (256,512,3,3), out 64x64"),
    Case("semantic_modulate (SCN)", _scn_inputs,
         lambda a, impl: (F.semantic_modulate(a["x"], a["mean"], a["rstd"], a["vectors"], a["bank"], impl=impl),),
         "x (4,256,64,64), K=4"),
    Case("candidate_combine (SCC)", _scc_inputs,
         lambda a, impl: (F.candidate_combine(a["vectors"], a["candidates"], impl=impl),),
         "candidates (4,3,256,64,64)"),
    Case("intra_class_positional", lambda quick: {"labels": _labels(quick, 151)},
         lambda a, impl: (F.intra_class_positional(a["labels"], impl=impl),),
         "labels (4,256,256), L=151 (forward only)"),
]


def _grad_inputs(inputs: Inputs) -> list[str]:
    return [k for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]


def _fwd_bwd(case: Case, inputs: Inputs, impl: str, grads_out: list[torch.Tensor] | None, seed: int):
    leaves = {k: (v.detach().clone().requires_grad_() if k in _grad_inputs(inputs) else v) for k, v in inputs.items()}
    outs = case.run(leaves, impl)
    if grads_out is None:
        g = torch.Generator().manual_seed(seed)
        grads_out = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    names = _grad_inputs(inputs)
    if not names:  # not differentiable (the positional map)
        return outs, {}, grads_out
    grads = torch.autograd.grad(outs, [leaves[k] for k in names], grads_out, allow_unused=True)
    return outs, dict(zip(names, grads)), grads_out


def _rel_err(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    scale = b.double().abs().max().item() or 1.0
    return (a.double() - b.double()).abs().max().item() / scale


def _median_time(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds instead of a minute)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per implementation")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (fixed for comparable timings)")
    parser.add_argument("--tol", type=float, default=1e-4, help="largest relative error accepted (float32)")
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if not _extension.LOADED:
        print(f"semnorm.check: the compiled extension is not loaded ({_extension.LOAD_ERROR}); nothing to compare")
        return 1
    print(f"semnorm.check: torch {torch.__version__}, {args.threads} threads, float32, CPU, "
          f"{'quick shapes' if args.quick else 'SPEC section 6 shapes'}, median of {args.reps}")
    header = f"{'op':28} {'max rel err (outputs, grads)':>30} {'reference ms':>13} {'native ms':>10} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    failed = False
    for i, case in enumerate(c for c in CASES if args.k in c.name):
        torch.manual_seed(i)
        inputs = case.make(args.quick)
        ref_out, ref_grads, grads_out = _fwd_bwd(case, inputs, "reference", None, i)
        nat_out, nat_grads, _ = _fwd_bwd(case, inputs, "native", grads_out, i)
        err = max([_rel_err(a, b) for a, b in zip(nat_out, ref_out)] +
                  [_rel_err(nat_grads[k], ref_grads[k]) for k in ref_grads])
        t_ref = _median_time(lambda: _fwd_bwd(case, inputs, "reference", grads_out, i), args.reps)
        t_nat = _median_time(lambda: _fwd_bwd(case, inputs, "native", grads_out, i), args.reps)
        ok = err <= args.tol
        failed |= not ok
        print(f"{case.name:28} {err:>30.2e} {t_ref * 1e3:>13.1f} {t_nat * 1e3:>10.1f} {t_ref / t_nat:>8.1f}x"
              f"{'' if ok else '  <-- error above tolerance'}")
    print("shapes: " + "; ".join(f"{c.name}: {c.shape}" for c in CASES if args.k in c.name))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
