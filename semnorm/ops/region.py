"""Region pool and region broadcast: fake kernels and autograd for both kernel namespaces.

The two ops are adjoint: the gradient of a broadcast is a region sum, and the gradient of a region
pool is a broadcast (of the gradient divided by the counts, for the mean). Each backward therefore
calls the other op, which also makes double backward work.
"""

from __future__ import annotations

import torch

from ..reference import opmath_dtype
from ._registry import register


def _pool_fake(x, labels, num_classes, mean):
    torch._check(x.dim() == 4, lambda: "semnorm.region_pool: x must have 4 dimensions")
    torch._check(labels.dim() == 3, lambda: "semnorm.region_pool: labels must have 3 dimensions")
    n, c = x.shape[:2]
    return x.new_empty(n, num_classes, c), x.new_empty(n, num_classes, dtype=torch.int64)


def _pool_setup(ctx, inputs, output):
    x, labels, _, mean = inputs
    ctx.save_for_backward(labels, output[1])
    ctx.mean = mean
    ctx.size = x.shape[2:]


def _pool_backward(ops, ctx, grad_pooled, _grad_counts):
    labels, counts = ctx.saved_tensors
    if ctx.mean:
        grad_pooled = (grad_pooled.to(opmath_dtype(grad_pooled.dtype)) / counts.clamp(min=1).unsqueeze(-1)).to(grad_pooled.dtype)
    grad_x = ops.region_broadcast(grad_pooled, labels, ctx.size[0], ctx.size[1])
    return grad_x, None, None, None


def _broadcast_fake(codes, labels, height, width):
    torch._check(codes.dim() == 3, lambda: "semnorm.region_broadcast: codes must have 3 dimensions")
    n, _, c = codes.shape
    return codes.new_empty(n, c, height, width)


def _broadcast_setup(ctx, inputs, output):
    codes, labels, _, _ = inputs
    ctx.save_for_backward(labels)
    ctx.num_classes = codes.shape[1]


def _broadcast_backward(ops, ctx, grad_out):
    (labels,) = ctx.saved_tensors
    grad_codes, _ = ops.region_pool(grad_out, labels, ctx.num_classes, False)
    return grad_codes, None, None, None


register("region_pool", _pool_fake, _pool_backward, _pool_setup)
register("region_broadcast", _broadcast_fake, _broadcast_backward, _broadcast_setup)
