"""Semantic modulate (SCN) and candidate combine (SCC): fake kernels and autograd for both kernel namespaces.

Both backwards are their own ops (``*_backward``); the autograd formulas here only route gradients
and drop those that are not needed.
"""

from __future__ import annotations

import torch

from ._registry import register
from .stats import fold_stats_grad


def _modulate_fake(x, mean, rstd, vectors, bank, offset=1.0, stats_of_x=0):
    op = "semnorm.semantic_modulate"
    torch._check(x.dim() == 4, lambda: f"{op}: x must have 4 dimensions")
    torch._check(vectors.dim() == 4, lambda: f"{op}: vectors must have 4 dimensions")
    torch._check(bank.dim() == 2, lambda: f"{op}: bank must have 2 dimensions")
    n, c, h, w = x.shape
    torch._check(mean.shape == (n, c), lambda: f"{op}: mean must have shape {(n, c)}")
    torch._check(rstd.shape == (n, c), lambda: f"{op}: rstd must have shape {(n, c)}")
    torch._check(vectors.shape[0] == n and vectors.shape[2] == h and vectors.shape[3] == w,
                 lambda: f"{op}: vectors must have shape (N, K, H, W) matching x")
    torch._check(bank.shape[0] == vectors.shape[1] and bank.shape[1] == 2 * c,
                 lambda: f"{op}: bank must have shape (K, 2C)")
    return x.new_empty(x.shape)


def _modulate_backward_fake(grad_y, x, mean, rstd, vectors, bank, offset):
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        mean.new_empty(mean.shape),
        rstd.new_empty(rstd.shape),
        vectors.new_empty(vectors.shape),
        bank.new_empty(bank.shape),
    )


def _modulate_setup(ctx, inputs, output):
    x, mean, rstd, vectors, bank, offset, stats_of_x = inputs
    ctx.save_for_backward(x, mean, rstd, vectors, bank)
    ctx.offset, ctx.stats_of_x = offset, stats_of_x


def _modulate_backward(ops, ctx, grad_y):
    x, mean, rstd, vectors, bank = ctx.saved_tensors
    gx, gmean, grstd, gvec, gbank = ops.semantic_modulate_backward(grad_y, x, mean, rstd, vectors, bank, ctx.offset)
    if ctx.stats_of_x != 0:
        fold_stats_grad(ctx.stats_of_x, gx, x, mean, rstd, gmean, grstd)
        gmean = grstd = None
    grads = (gx, gmean, grstd, gvec, gbank)
    return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:5])) + (None, None)


def _combine_fake(vectors, candidates):
    op = "semnorm.candidate_combine"
    torch._check(vectors.dim() == 4, lambda: f"{op}: vectors must have 4 dimensions")
    torch._check(candidates.dim() == 5, lambda: f"{op}: candidates must have 5 dimensions")
    n, k, h, w = vectors.shape
    torch._check(candidates.shape[0] == n and candidates.shape[1] == k and candidates.shape[3] == h
                 and candidates.shape[4] == w, lambda: f"{op}: candidates must have shape (N, K, C, H, W) matching vectors")
    return vectors.new_empty(n, candidates.shape[2], h, w)


def _combine_backward_fake(grad_y, vectors, candidates):
    return (
        vectors.new_empty(vectors.shape),
        candidates.new_empty(candidates.shape),
    )


def _combine_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _combine_backward(ops, ctx, grad_y):
    vectors, candidates = ctx.saved_tensors
    grads = ops.candidate_combine_backward(grad_y, vectors, candidates)
    return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad))


register("semantic_modulate", _modulate_fake, _modulate_backward, _modulate_setup)
register("semantic_modulate_backward", _modulate_backward_fake)
register("candidate_combine", _combine_fake, _combine_backward, _combine_setup)
register("candidate_combine_backward", _combine_backward_fake)
