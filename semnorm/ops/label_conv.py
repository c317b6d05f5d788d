"""Label tap gather (the label convolution): fake kernels and autograd for both kernel namespaces.

``label_tap_gather`` is linear in its table, and ``label_tap_gather_backward`` (a segmented
scatter-add of the output gradient per tap and label) is its exact adjoint. Each op's backward
therefore calls the other, which also makes double backward work.
"""

from __future__ import annotations

import torch

from ._registry import register


def _gather_fake(table, labels, kernel_size, height, width):
    op = "semnorm.label_tap_gather"
    torch._check(table.dim() == 4, lambda: f"{op}: table must have 4 dimensions")
    torch._check(labels.dim() == 3, lambda: f"{op}: labels must have 3 dimensions")
    torch._check(kernel_size >= 1 and kernel_size % 2 == 1, lambda: f"{op}: kernel_size must be a positive odd integer")
    torch._check(table.shape[2] == kernel_size * kernel_size, lambda: f"{op}: table must have kernel_size^2 taps")
    n = labels.shape[0]
    torch._check(table.shape[0] == 1 or table.shape[0] == n, lambda: f"{op}: table must have 1 or N entries")
    return table.new_empty(n, table.shape[1], height, width)


def _gather_setup(ctx, inputs, output):
    table, labels, kernel_size, height, width = inputs
    ctx.save_for_backward(labels)
    ctx.num_tables = table.shape[0]
    ctx.num_classes = table.shape[3]
    ctx.kernel_size = kernel_size


def _gather_backward(ops, ctx, grad_out):
    (labels,) = ctx.saved_tensors
    grad_table = ops.label_tap_gather_backward(
        grad_out, labels, ctx.num_tables, ctx.num_classes, ctx.kernel_size
    )
    return grad_table, None, None, None, None


def _backward_fake(grad_out, labels, num_tables, num_classes, kernel_size):
    op = "semnorm.label_tap_gather_backward"
    torch._check(grad_out.dim() == 4, lambda: f"{op}: grad_out must have 4 dimensions")
    torch._check(labels.dim() == 3, lambda: f"{op}: labels must have 3 dimensions")
    torch._check(kernel_size >= 1 and kernel_size % 2 == 1, lambda: f"{op}: kernel_size must be a positive odd integer")
    n = grad_out.shape[0]
    torch._check(num_tables == 1 or num_tables == n, lambda: f"{op}: num_tables must be 1 or N")
    return grad_out.new_empty(num_tables, grad_out.shape[1], kernel_size * kernel_size, num_classes)


def _backward_setup(ctx, inputs, output):
    grad_out, labels, _, _, kernel_size = inputs
    ctx.save_for_backward(labels)
    ctx.kernel_size = kernel_size
    ctx.size = grad_out.shape[2:]


def _backward_backward(ops, ctx, grad_grad_table):
    (labels,) = ctx.saved_tensors
    grad_grad_out = ops.label_tap_gather(grad_grad_table, labels, ctx.kernel_size, ctx.size[0], ctx.size[1])
    return grad_grad_out, None, None, None, None


register("label_tap_gather", _gather_fake, _gather_backward, _gather_setup)
register("label_tap_gather_backward", _backward_fake, _backward_backward, _backward_setup)
