"""Intra-class positional encoding (CLADE-ICPE): fake kernel for both kernel namespaces.

The op maps integer labels to a float32 map; labels are not differentiable, so there is no
autograd formula (and no backward op): the output never requires grad.
"""

from __future__ import annotations

import torch

from ._registry import register


def _positional_fake(labels, ignore_label=-1, eps=1e-5):
    torch._check(labels.dim() == 3, lambda: "semnorm.intra_class_positional: labels must have 3 dimensions")
    torch._check(
        labels.dtype in (torch.uint8, torch.int32, torch.int64),
        lambda: f"semnorm.intra_class_positional: labels must be an integer tensor (uint8, int32 or int64), got {labels.dtype}",
    )
    n, h, w = labels.shape
    return labels.new_empty(n, 2, h, w, dtype=torch.float32)


register("intra_class_positional", _positional_fake)
