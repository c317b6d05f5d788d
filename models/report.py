"""Parameters and FLOPs of every generator at its paper resolution, beside the papers' figures.

Run ``python -m semnorm.models.report`` (options: ``--methods``, ``--presets``, ``--all``, ``--small``).
Networks are built and run on fake tensors (``FakeTensorMode``: shapes only, no memory, no arithmetic),
a few seconds in all; the FLOP count needs semnorm's compiled extension (its ops' fake kernels).

Counting convention (it reproduces CLADE Table 1 to the paper's rounding, see README "Models"): per
image, the multiply-accumulates of every convolution and linear layer of the *published dense
formulation* (SPADE's first modulation convolution over the one-hot map, SEAN's 3x3 convolutions over
the broadcast style map, all K candidate convolutions of SC-GAN's SCC), plus one operation per output
element of a convolution with a bias. Normalization, activations, upsampling, element-wise
modulation and CLADE's guided sampling count zero. This is the convention of the ``thop`` profiler
(``count_convNd``, ``count_linear``), which the CLADE authors' figures follow: with CLADE's sampling
counted as eq. 9 (2 C H W) the CLADE rows would come out 0.1-0.2 % higher. semnorm's own kernels
compute SPADE and SEAN with far fewer operations (label gathers instead of one-hot convolutions); the
table counts the published formulation so that it compares with the papers.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from semnorm import has_extension
from semnorm.nn import SCC, SEAN, SPADE

from .blocks import set_impl

__all__ = ["PAPER", "DEFAULT_ROWS", "count_params", "count_flops", "measure", "report_rows", "format_table", "main"]

#: the papers' figures: (method, preset) -> (params M, FLOPs G or None, source)
PAPER: dict[tuple[str, str], tuple[float, float | None, str]] = {
    ("spade", "ade20k"): (96.5, 181.3, "CLADE Table 1"),
    ("clade", "ade20k"): (71.4, 42.2, "CLADE Table 1"),
    ("clade_icpe", "ade20k"): (71.4, 42.2, "CLADE Table 1"),
    ("spade", "coco_stuff"): (97.5, 191.3, "CLADE Table 1"),
    ("clade", "coco_stuff"): (72.5, 42.4, "CLADE Table 1"),
    ("clade_icpe", "coco_stuff"): (72.5, 42.4, "CLADE Table 1"),
    ("spade", "cityscapes"): (93.0, 281.5, "CLADE Table 1"),
    ("clade", "cityscapes"): (67.9, 75.5, "CLADE Table 1"),
    ("clade_icpe", "cityscapes"): (67.9, 75.5, "CLADE Table 1"),
    ("sean", "celebamask_hq"): (266.9, None, "published SEAN code"),
    ("scgan", "ade20k"): (66.2, None, "SC-GAN paper (60.9 M in its code)"),
}

#: rows printed by default: the papers' rows and the mixed generator at its Table 6 settings
DEFAULT_ROWS: tuple[tuple[str, str], ...] = tuple(PAPER) + (("mixed", "ade20k"), ("mixed", "cityscapes"))

METHODS = ("spade", "clade", "clade_icpe", "mixed", "sean", "scgan")
PRESET_NAMES = ("ade20k", "coco_stuff", "cityscapes", "celebamask_hq")


def count_params(model: nn.Module) -> int:
    """Number of parameters (spectral norm's ``weight_u`` / ``weight_v`` and norm statistics are buffers)."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# FLOPs


def _conv_ops(module: nn.Module, out: torch.Tensor) -> float:
    """thop's count_convNd: output elements x (Cin / groups * k*k + bias), per image."""
    k = 1
    for s in module.kernel_size:
        k *= s
    per_out = module.in_channels // module.groups * k + (1 if module.bias is not None else 0)
    return out[0].numel() * per_out


def _linear_ops(module: nn.Linear, out: torch.Tensor) -> float:
    """thop's count_linear: in_features x output elements (bias not counted), per image."""
    return module.in_features * out[0].numel()


def _dense_label_conv(num_in: int, hidden: int, k: int, hw: int) -> float:
    return (num_in * k * k + 1) * hidden * hw


def _spade_extra(m: SPADE, hw: int) -> float:
    """SPADE's first modulation conv over the one-hot map (semnorm gathers it; not a module call)."""
    return _dense_label_conv(m.label_nc + int(m.edge), m.mlp_shared[0].out_channels, m.kernel_size, hw)


def _sean_extra(m: SEAN, hw: int) -> float:
    """SEAN's mask-branch first conv, per-class linear maps and style convolutions (not module calls)."""
    ops = _spade_extra(m.Spade, hw)
    if m.use_style:
        ops += m.label_nc * m.style_dim * m.style_dim
        k = m.conv_gamma.kernel_size[0] * m.conv_gamma.kernel_size[1]
        ops += 2 * (m.style_dim * k + 1) * m.num_features * hw
    return ops


def _scc_extra(m: SCC, hw: int) -> float:
    return m.num_candidates * m.in_channels * m.kernel_size ** 2 * m.out_channels * hw


@dataclass
class _Counter:
    total: float = 0.0


def count_flops(model: nn.Module, run: Callable[[], object]) -> float:
    """Operations per image of ``run()`` (a forward of ``model`` on a batch of ONE), in the convention
    of the module docstring. ``model`` may hold fake tensors (FakeTensorMode); SPADE layers are switched to their
    dense path for the count (their fast path needs real data)."""
    counter = _Counter()
    handles = []
    # convolutions that semnorm computes without calling the module (label gathers, stacked weights)
    # are added by these pre-hooks; modules that are called are counted by the generic hooks below
    special = ((SPADE, _spade_extra), (SEAN, _sean_extra), (SCC, _scc_extra))

    def pre_hook(fn):
        def hook(module, args):
            x = args[0]
            counter.total += fn(module, x.shape[-2] * x.shape[-1])
        return hook

    def conv_hook(module, args, out):
        counter.total += _conv_ops(module, out)

    def linear_hook(module, args, out):
        counter.total += _linear_ops(module, out)

    fast = {}
    for m in model.modules():
        for cls, fn in special:
            if isinstance(m, cls):
                handles.append(m.register_forward_pre_hook(pre_hook(fn)))
                break
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        if isinstance(m, SPADE):
            fast[m] = m.fast
            m.fast = "never"
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
        for m, value in fast.items():
            m.fast = value
    return counter.total


# ----------------------------------------------------------------------------------------------
# building and measuring


def _build(method: str, preset: str, **overrides) -> nn.Module:
    from . import build_generator
    return build_generator(method, preset, **overrides)


def _forward_runner(model: nn.Module, device: torch.device) -> Callable[[], object]:
    """A closure running one forward of ``model`` on a batch of one at its output size."""
    from .generators import SEANGenerator, SPADEGenerator

    config = getattr(model, "config", None) or getattr(model, "cfg", None)
    if isinstance(model, (SPADEGenerator, SEANGenerator)):
        h, w = config.output_size
        labels = torch.zeros(1, h, w, dtype=torch.long, device=device)
        if isinstance(model, SEANGenerator):
            image = torch.zeros(1, 3, h, w, device=device)
            return lambda: model(labels, image=image)
        edge = torch.zeros(1, 1, h, w, device=device) if config.instance else None
        return lambda: model(labels, edge=edge)
    # other generators (SC-GAN): try the conventional (labels) call at the config's size
    size = None
    for attr in ("output_size", "size"):
        size = getattr(config, attr, None) if config is not None else None
        if size is not None:
            break
    if size is None:
        raise RuntimeError(f"report: do not know how to run {type(model).__name__}")
    h, w = (size, size) if isinstance(size, int) else size
    labels = torch.zeros(1, h, w, dtype=torch.long, device=device)
    if getattr(config, "edge", False):
        edge = torch.zeros(1, 1, h, w, device=device)
        return lambda: model(labels, edge=edge)
    return lambda: model(labels)


@dataclass
class Row:
    method: str
    preset: str
    params_m: float | None
    flops_g: float | None
    paper_params_m: float | None
    paper_flops_g: float | None
    source: str
    note: str = ""


def measure(method: str, preset: str, **overrides) -> Row:
    """Parameters (M) and FLOPs (G, per image at the preset's resolution) of one generator.

    The generator is built and run under ``torch._subclasses.FakeTensorMode``: tensors carry shapes and
    dtypes only (no memory, no arithmetic), and semnorm's custom ops answer with their fake kernels.
    """
    paper = PAPER.get((method, preset), (None, None, ""))
    note = ""
    with FakeTensorMode():
        try:
            model = _build(method, preset, **overrides)
        except (ImportError, ValueError) as err:  # a missing module, or a combination the method does not support
            return Row(method, preset, None, None, paper[0], paper[1], paper[2], f"not built: {str(err)[:100]}")
        params = count_params(model) / 1e6
        flops = None
        try:
            if not has_extension:  # the reference path checks label values, which fake tensors do not have
                raise RuntimeError("semnorm's compiled extension is not loaded")
            set_impl(model, "native")
            model.train()
            flops = count_flops(model, _forward_runner(model, torch.device("cpu"))) / 1e9
        except Exception as err:  # a generator whose forward cannot run here still gets its parameter count
            note = f"FLOPs not counted: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
    return Row(method, preset, params, flops, paper[0], paper[1], paper[2], note)


def report_rows(rows: Iterable[tuple[str, str]] = DEFAULT_ROWS, **overrides) -> list[Row]:
    """:func:`measure` for each (method, preset)."""
    return [measure(method, preset, **overrides) for method, preset in rows]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _diff(ours: float | None, paper: float | None) -> str:
    if ours is None or paper is None:
        return "-"
    return f"{100 * (ours - paper) / paper:+.2f}%"


def format_table(rows: Sequence[Row]) -> str:
    """A markdown table of the rows (ours beside the papers' figures, relative differences)."""
    head = ["method", "preset", "params (M)", "paper", "diff", "FLOPs (G)", "paper", "diff", "source / note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        note = "; ".join(s for s in (r.source, r.note) if s)
        cells = [r.method, r.preset, _fmt(r.params_m, 3), _fmt(r.paper_params_m), _diff(r.params_m, r.paper_params_m),
                 _fmt(r.flops_g, 2), _fmt(r.paper_flops_g), _diff(r.flops_g, r.paper_flops_g), note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m semnorm.models.report",
        description="Parameters and FLOPs (per image, paper resolution, thop convention) of the generators "
                    "beside the papers\' figures; built on fake tensors (no memory).")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="methods (default: the papers' rows)")
    parser.add_argument("--presets", nargs="+", choices=PRESET_NAMES + ("custom",), help="presets")
    parser.add_argument("--all", action="store_true", help="every method x preset")
    parser.add_argument("--small", action="store_true", help="the tiny 'custom' preset only (quick check)")
    args = parser.parse_args(argv)
    if args.small:
        methods = args.methods or ("spade", "clade", "clade_icpe", "mixed", "sean")
        rows = [(m, "custom") for m in methods]
    elif args.all or args.methods or args.presets:
        methods = args.methods or METHODS
        presets = args.presets or PRESET_NAMES
        rows = [(m, p) for m in methods for p in presets]
    else:
        rows = list(DEFAULT_ROWS)
    start = time.perf_counter()
    table = format_table(report_rows(rows))
    print(table)
    print(f"\n{len(rows)} generators built on fake tensors in {time.perf_counter() - start:.1f} s; FLOPs = "
          "multiply-accumulates of convolutions and linear layers (published dense formulation) + 1 per biased "
          "conv output, per image (thop convention, reproduces CLADE Table 1).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
