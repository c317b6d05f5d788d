"""Norm statistics and the fused normalize + modulate: fake kernels and autograd for both kernel namespaces.

``channel_moments`` returns (mean, M2); its backward is elementwise in x. ``normalize_modulate``
takes mean and rstd as inputs and returns their gradients, so batch, instance and synchronized
batch norms are all the chain ``channel_moments -> (tiny torch ops on (C,) tensors) ->
normalize_modulate``, and autograd assembles the full normalization gradient.

That chain gives x two (N, C, H, W) gradients (the modulate's direct term and channel_moments'),
which exist together until autograd adds them. When mean and rstd are x's own batch or instance
statistics, computed without a graph, the modulate ops take ``stats_of_x`` (1 instance, 2 batch)
and :func:`fold_stats_grad` adds the statistics' term to the direct one in place: one buffer. The
three modulate ops (normalize_modulate, class_modulate, semantic_modulate) share it.

``noise`` (SEAN's per-pixel noise, shared by the channels) gets its gradient here in Python,
``grad_noise[n, h, w] = sum_c grad_x_eff[n, c, h, w] * noise_scale[c]`` (the kernels' grad_x is the
gradient wrt x_eff), computed only when noise requires grad. For half/bfloat16 inputs the kernels'
grad_x is rounded to x's dtype, so that rare path reruns the backward op on opmath copies to keep
grad_noise accurate.
"""

from __future__ import annotations

import torch

from ..reference import opmath_dtype
from ._registry import register


def _noise_grad(grad_x, noise_scale):
    return (grad_x.to(noise_scale.dtype) * noise_scale.view(1, -1, 1, 1)).sum(1)


def _up(t, dtype):
    return None if t is None else t.to(dtype)


# ---- the statistics' gradient folded into grad_x (stats_of_x)

STATS_OF_X = {None: 0, "instance": 1, "batch": 2}


def fold_stats_grad(stats_of_x, grad_x, x, mean, rstd, grad_mean, grad_rstd, noise=None, noise_scale=None,
                    grad_noise_scale=None):
    """Add the gradient through x's own statistics to the modulate kernels' direct ``grad_x``, in place.

    The kernels return ``grad_x = dL/dxhat * rstd`` (mean and rstd held fixed) with
    ``grad_mean = -sum grad_x`` and ``grad_rstd = sum grad_x * xhat / rstd**2`` over each plane. With
    biased statistics over M values (H*W per instance, N*H*W per batch) the full gradient is
    ``grad_x - mean_M(grad_x) - xhat * mean_M(grad_x * xhat)``, an affine map of x_eff per channel:
    ``grad_x += coef * x_eff + const``, two in-place passes and no (N, C, H, W) temporary. With noise
    (x_eff = x + noise_scale * noise) the grad_noise_scale of the kernels is corrected likewise.
    Returns grad_noise_scale (corrected, or None without noise).
    """
    n, c, h, w = x.shape
    s1 = -grad_mean  # sum of grad_x per plane
    s2 = grad_rstd * rstd * rstd  # sum of grad_x * xhat per plane
    count = h * w
    if stats_of_x == STATS_OF_X["batch"]:
        s1, s2, mean, rstd, count = s1.sum(0, keepdim=True), s2.sum(0, keepdim=True), mean[:1], rstd[:1], count * n
    coef = -(s2 / count) * rstd
    const = -(s1 / count) - coef * mean
    view = (coef.shape[0], c, 1, 1)
    grad_x.addcmul_(x, coef.view(view)).add_(const.view(view))
    if noise is None:
        return None
    grad_x.addcmul_(noise.unsqueeze(1), (coef * noise_scale).view(view))
    if grad_noise_scale is not None:
        # sum over (n, h, w) of (const + coef * x_eff) * noise
        noise_sum, noise_sq = noise.sum((1, 2)), noise.square().sum((1, 2))  # (N,)
        x_noise = torch.bmm(x.to(noise.dtype).flatten(2), noise.view(n, h * w, 1)).view(n, c)  # no (N, C, H, W) copy
        corr = const * noise_sum[:, None] + coef * (x_noise + noise_scale * noise_sq[:, None])
        grad_noise_scale = grad_noise_scale + corr.sum(0)
    return grad_noise_scale


# ---- channel_moments


def _moments_fake(x, per_instance, noise=None, noise_scale=None):
    torch._check(x.dim() == 4, lambda: "semnorm.channel_moments: x must have 4 dimensions")
    torch._check((noise is None) == (noise_scale is None), lambda: "semnorm.channel_moments: noise and noise_scale must be given together")
    if noise is not None:
        torch._check(noise.shape == (x.shape[0], x.shape[2], x.shape[3]), lambda: "semnorm.channel_moments: noise must have shape (N, H, W)")
        torch._check(noise_scale.shape == (x.shape[1],), lambda: "semnorm.channel_moments: noise_scale must have shape (C,)")
    acc = opmath_dtype(x.dtype)
    shape = (x.shape[0], x.shape[1]) if per_instance else (x.shape[1],)
    return x.new_empty(shape, dtype=acc), x.new_empty(shape, dtype=acc)


def _moments_backward_fake(grad_mean, grad_m2, x, mean, per_instance, noise=None, noise_scale=None):
    torch._check(x.dim() == 4, lambda: "semnorm.channel_moments_backward: x must have 4 dimensions")
    torch._check(grad_mean.shape == mean.shape, lambda: "semnorm.channel_moments_backward: grad_mean must have mean's shape")
    torch._check(grad_m2.shape == mean.shape, lambda: "semnorm.channel_moments_backward: grad_m2 must have mean's shape")
    acc = opmath_dtype(x.dtype)
    return x.new_empty(x.shape), x.new_empty((x.shape[1] if noise is not None else 0,), dtype=acc)


def _moments_setup(ctx, inputs, output):
    x, per_instance, noise, noise_scale = inputs
    ctx.save_for_backward(x, output[0], noise, noise_scale)
    ctx.per_instance = per_instance


def _moments_backward(ops, ctx, grad_mean, grad_m2):
    x, mean, noise, noise_scale = ctx.saved_tensors
    grad_mean = torch.zeros_like(mean) if grad_mean is None else grad_mean
    grad_m2 = torch.zeros_like(mean) if grad_m2 is None else grad_m2
    grad_x, grad_scale = ops.channel_moments_backward(
        grad_mean, grad_m2, x, mean, ctx.per_instance, noise, noise_scale
    )
    grad_noise = None
    if noise is not None and ctx.needs_input_grad[2]:
        grad_xe = grad_x
        if grad_x.dtype != mean.dtype:  # half / bfloat16: recompute grad wrt x_eff unrounded
            grad_xe, _ = ops.channel_moments_backward(
                grad_mean, grad_m2, x.to(mean.dtype), mean, ctx.per_instance, noise, noise_scale
            )
        grad_noise = _noise_grad(grad_xe, noise_scale)
    return grad_x, None, grad_noise, grad_scale if noise is not None else None


# ---- normalize_modulate


def _modulate_fake(x, mean, rstd, gamma, beta, gamma2=None, beta2=None, blend=None, noise=None, noise_scale=None, offset=1.0,
                   stats_of_x=0):
    op = "semnorm.normalize_modulate"
    torch._check(x.dim() == 4, lambda: f"{op}: x must have 4 dimensions")
    torch._check(mean.shape == (x.shape[0], x.shape[1]), lambda: f"{op}: mean must have shape (N, C)")
    torch._check(rstd.shape == (x.shape[0], x.shape[1]), lambda: f"{op}: rstd must have shape (N, C)")
    torch._check(gamma.shape == x.shape, lambda: f"{op}: gamma must have x's shape")
    torch._check(beta.shape == x.shape, lambda: f"{op}: beta must have x's shape")
    torch._check((blend is None) == (gamma2 is None) == (beta2 is None), lambda: f"{op}: gamma2, beta2 and blend must be given together")
    torch._check((noise is None) == (noise_scale is None), lambda: f"{op}: noise and noise_scale must be given together")
    return x.new_empty(x.shape)


def _modulate_backward_fake(grad_y, x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, offset):
    _modulate_fake(x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, offset)
    acc = opmath_dtype(x.dtype)
    n, c = x.shape[:2]
    two = blend is not None

    def dense(present):
        return x.new_empty(x.shape) if present else x.new_empty((0,))

    return (
        x.new_empty(x.shape),
        x.new_empty((n, c), dtype=acc),
        x.new_empty((n, c), dtype=acc),
        dense(True),
        dense(two),  # without a blend grad_beta is grad_y itself: empty
        dense(two),
        dense(two),
        x.new_empty((2 if two else 0,), dtype=acc),
        x.new_empty((c if noise is not None else 0,), dtype=acc),
    )


def _modulate_setup(ctx, inputs, output):
    saved = list(inputs[:10])
    if saved[7] is None:  # no blend: the backward never reads beta, so it is not kept alive for it
        saved[4] = None
    ctx.save_for_backward(*saved)
    ctx.offset, ctx.stats_of_x = inputs[10], inputs[11]


def _modulate_backward(ops, ctx, grad_y):
    x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale = ctx.saved_tensors
    two = blend is not None
    if not two:
        beta = gamma  # a stand-in of beta's shape and dtype: the kernels read beta only with a blend
    grad_y = grad_y.contiguous()
    grads = ops.normalize_modulate_backward(
        grad_y, x, mean, rstd, gamma, beta, gamma2, beta2, blend, noise, noise_scale, ctx.offset
    )
    gx, gmean, grstd, ggamma, gbeta, ggamma2, gbeta2, gblend, gscale = grads
    if not two:
        gbeta = grad_y  # y = xhat * (offset + gamma) + beta: the kernels return grad_beta empty
    has_noise = noise is not None
    folded = ctx.stats_of_x != 0
    if folded:
        gscale = fold_stats_grad(ctx.stats_of_x, gx, x, mean, rstd, gmean, grstd, noise, noise_scale,
                                 gscale if has_noise and ctx.needs_input_grad[9] else None)
    grad_noise = None
    if has_noise and ctx.needs_input_grad[8]:
        grad_xe = gx
        if gx.dtype != mean.dtype:  # half / bfloat16: recompute grad wrt x_eff unrounded
            acc = mean.dtype
            grad_xe = ops.normalize_modulate_backward(
                grad_y.to(acc).contiguous(), x.to(acc), mean, rstd, gamma.to(acc), beta.to(acc), _up(gamma2, acc),
                _up(beta2, acc), blend, noise, noise_scale, ctx.offset
            )[0]
            if folded:
                fold_stats_grad(ctx.stats_of_x, grad_xe, x, mean, rstd, gmean, grstd, noise, noise_scale)
        grad_noise = _noise_grad(grad_xe, noise_scale)
    return (
        gx,
        None if folded else gmean,
        None if folded else grstd,
        ggamma,
        gbeta,
        ggamma2 if two else None,
        gbeta2 if two else None,
        gblend if two else None,
        grad_noise,
        gscale if has_noise else None,
        None,
        None,
    )


register("channel_moments", _moments_fake, _moments_backward, _moments_setup)
register("channel_moments_backward", _moments_backward_fake)
register("normalize_modulate", _modulate_fake, _modulate_backward, _modulate_setup)
register("normalize_modulate_backward", _modulate_backward_fake)
