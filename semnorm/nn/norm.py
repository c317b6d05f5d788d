"""The parameter-free normalization shared by every semnorm layer."""

from __future__ import annotations

import torch
from torch import nn

from .. import functional as F

NORMS = ("batch", "instance", "syncbatch")


class ParamFreeNorm(nn.Module):
    """Statistics of a parameter-free norm, with ``nn.BatchNorm2d``'s buffers and names.

    It returns ``(mean, rstd)`` (each (N, C) in x's opmath dtype) for the fused modulate ops instead
    of a normalized tensor, so the normalization is applied inside the modulate kernel. Buffers
    (``running_mean``, ``running_var``, ``num_batches_tracked``; batch and syncbatch only) carry the
    names of the published ``param_free_norm`` modules (``BatchNorm2d(C, affine=False)``,
    ``SynchronizedBatchNorm2d``), so their checkpoints load; "instance" matches
    ``InstanceNorm2d(C, affine=False)`` and has no buffers.

    Args:
        num_features: channels C.
        norm: "batch", "instance" or "syncbatch" (batch statistics all-gathered across
            ``process_group``; plain batch norm when torch.distributed is not initialized).
        eps: added to the variance.
        momentum: running-statistics momentum (PyTorch convention).
        process_group: torch.distributed group for "syncbatch" (default: the world).
    """

    def __init__(self, num_features: int, norm: str = "batch", eps: float = 1e-5, momentum: float = 0.1,
                 process_group=None) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"semnorm: norm must be one of {NORMS}, got {norm!r}")
        if num_features <= 0:
            raise ValueError(f"semnorm: num_features must be positive, got {num_features}")
        self.num_features, self.norm, self.eps, self.momentum = num_features, norm, eps, momentum
        self.process_group = process_group
        if norm != "instance":
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None, noise_scale: torch.Tensor | None = None,
                impl: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, rstd) of ``x`` (+ ``noise_scale[c] * noise`` when given), each (N, C)."""
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"semnorm.ParamFreeNorm: x must have shape (N, {self.num_features}, H, W), "
                             f"got {tuple(x.shape)}")
        if self.norm == "instance":
            return F.norm_stats(x, "instance", eps=self.eps, noise=noise, noise_scale=noise_scale, impl=impl)
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.norm_stats(
            x, self.norm, running_mean=self.running_mean, running_var=self.running_var, training=self.training,
            momentum=self.momentum, eps=self.eps, process_group=self.process_group, noise=noise,
            noise_scale=noise_scale, impl=impl,
        )

    def stats(self, x: torch.Tensor, noise: torch.Tensor | None = None, noise_scale: torch.Tensor | None = None,
              impl: str | None = None) -> tuple[torch.Tensor, torch.Tensor, str | None]:
        """``(mean, rstd, stats_of_x)`` for the modulate ops' ``stats_of_x`` argument.

        Where the statistics are x's own batch or instance statistics and a gradient may flow (grad
        mode on; batch norm in training; "syncbatch" only without an initialized process group, since
        gathered statistics need the differentiable all-gather), they are computed without a graph and
        ``stats_of_x`` names them ("batch" / "instance"): the modulate op's backward then folds their
        gradient into x's, so x gets one (N, C, H, W) gradient buffer instead of two. Otherwise this is
        :meth:`forward` with ``stats_of_x=None``. Running statistics are updated the same either way.
        """
        kind = None
        if torch.is_grad_enabled():
            if self.norm == "instance":
                kind = "instance"
            elif self.training and not (self.norm == "syncbatch" and F._distributed_initialized()):
                kind = "batch"
        if kind is None:
            return (*self(x, noise, noise_scale, impl), None)
        with torch.no_grad():
            mean, rstd = self(x, noise, noise_scale, impl)
        return mean, rstd, kind

    def extra_repr(self) -> str:
        return f"{self.num_features}, norm={self.norm!r}, eps={self.eps}, momentum={self.momentum}"
