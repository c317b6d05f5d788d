"""CLADE guided sampling fused with normalize + modulate: fake kernels and autograd.

``class_modulate`` gathers per-class rows of the (L, C) banks by label inside the kernel; its
backward is the op ``class_modulate_backward`` (segmented sums into the banks, the normalization
terms for mean and rstd, and per-pixel sums over channels for the optional ICPE factors).
"""

from __future__ import annotations

import torch

from ._registry import register
from .stats import fold_stats_grad

_OP = "semnorm.class_modulate"


def _check_common(x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta, op=_OP):
    torch._check(x.dim() == 4, lambda: f"{op}: x must have 4 dimensions")
    torch._check(labels.dim() == 3, lambda: f"{op}: labels must have 3 dimensions")
    torch._check(labels.shape[0] == x.shape[0], lambda: f"{op}: labels has another batch size than x")
    n, c, h, w = x.shape
    torch._check(mean.shape == (n, c), lambda: f"{op}: mean must have shape (N, C)")
    torch._check(rstd.shape == (n, c), lambda: f"{op}: rstd must have shape (N, C)")
    torch._check(weight.dim() == 2 and weight.shape[1] == c, lambda: f"{op}: weight must have shape (L, C)")
    torch._check(bias.shape == weight.shape, lambda: f"{op}: bias must have weight's shape")
    for name, s in (("scale_gamma", scale_gamma), ("scale_beta", scale_beta)):
        if s is not None:
            torch._check(s.shape == (n, h, w), lambda name=name: f"{op}: {name} must have shape (N, H, W)")


def _fake(x, mean, rstd, labels, weight, bias, scale_gamma=None, scale_beta=None, offset=0.0, stats_of_x=0):
    _check_common(x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _backward_fake(grad_y, x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta, offset):
    _check_common(x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta, _OP + "_backward")
    torch._check(grad_y.shape == x.shape, lambda: f"{_OP}_backward: grad_y must have x's shape")
    n, c, h, w = x.shape
    grad_sg = mean.new_empty(n, h, w) if scale_gamma is not None else mean.new_empty(0)
    grad_sb = mean.new_empty(n, h, w) if scale_beta is not None else mean.new_empty(0)
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        torch.empty_like(mean),
        torch.empty_like(rstd),
        torch.empty_like(weight),
        torch.empty_like(bias),
        grad_sg,
        grad_sb,
    )


def _setup(ctx, inputs, output):
    x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta, offset, stats_of_x = inputs
    ctx.save_for_backward(x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta)
    ctx.offset, ctx.stats_of_x = offset, stats_of_x


def _backward(ops, ctx, grad_y):
    x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta = ctx.saved_tensors
    gx, gm, gr, gw, gb, gsg, gsb = ops.class_modulate_backward(
        grad_y.contiguous(), x, mean, rstd, labels, weight, bias, scale_gamma, scale_beta, ctx.offset
    )
    folded = ctx.stats_of_x != 0
    if folded:
        fold_stats_grad(ctx.stats_of_x, gx, x, mean, rstd, gm, gr)
    return (
        gx,
        None if folded else gm,
        None if folded else gr,
        None,
        gw,
        gb,
        gsg if scale_gamma is not None else None,
        gsb if scale_beta is not None else None,
        None,
        None,
    )


register("class_modulate", _fake, _backward, _setup)
register("class_modulate_backward", _backward_fake)
