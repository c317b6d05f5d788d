"""SC-GAN's semantic normalization (SCN) and semantic convolution (SCC) (Wang et al. 2021) on semnorm's ops."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import nn

from .. import functional as F
from .. import reference
from .norm import ParamFreeNorm


def _check_vectors(vectors: torch.Tensor, x: torch.Tensor, k: int, layer: str) -> None:
    if not isinstance(vectors, torch.Tensor) or not vectors.is_floating_point() or vectors.dim() != 4:
        raise ValueError(f"semnorm.{layer}: vectors must be a floating point (N, K, H, W) tensor, got "
                         f"{getattr(vectors, 'dtype', type(vectors).__name__)} {tuple(getattr(vectors, 'shape', ()))}")
    n, _, h, w = x.shape
    if tuple(vectors.shape) != (n, k, h, w):
        raise ValueError(f"semnorm.{layer}: vectors must have shape (N, K, H, W) = {(n, k, h, w)} (x's batch and "
                         f"resolution, K = {k}); got {tuple(vectors.shape)}. Resize the semantic vectors to x's "
                         f"resolution first (the SC-GAN generator produces them at every resolution).")


class SCN(nn.Module):
    """Semantic normalization: ``y = N(x) * (1 + gamma) + beta``, ``[gamma; beta] = sum_k V_k bank_k``.

    A soft CLADE: the per-pixel semantic vectors V (N, K, H, W) mix the K rows of the bank
    ``affine_params_groups`` (K, 2C) (gamma columns first), inside one fused kernel
    (:func:`semnorm.functional.semantic_modulate`); gamma and beta are never materialized. Parameter
    and buffer names are those of the published SCN (``param_free_norm.*``, ``affine_params_groups``,
    zero init), so its checkpoints load with ``load_state_dict(strict=True)``.

    Args:
        num_features: channels C of x.
        num_vectors: number K of semantic vectors (bank rows).
        norm: "batch", "instance" or "syncbatch".
        impl: semnorm implementation for every op ("native", "triton", "reference" or None: automatic).
    """

    def __init__(self, num_features: int, num_vectors: int, norm: str = "batch", impl: str | None = None) -> None:
        super().__init__()
        if not isinstance(num_vectors, int) or num_vectors <= 0:
            raise ValueError(f"semnorm.SCN: num_vectors must be a positive int, got {num_vectors!r}")
        self.num_features, self.num_vectors, self.impl = num_features, num_vectors, impl
        self.param_free_norm = ParamFreeNorm(num_features, norm)
        self.affine_params_groups = nn.Parameter(torch.zeros(num_vectors, 2 * num_features))

    def forward(self, x: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W); vectors (N, K, H, W) at x's resolution (a size mismatch raises). Returns (N, C, H, W)."""
        _check_vectors(vectors, x, self.num_vectors, "SCN")
        acc = reference.opmath_dtype(x.dtype)
        mean, rstd, of_x = self.param_free_norm.stats(x, impl=self.impl)
        return F.semantic_modulate(x, mean, rstd, vectors.to(x.dtype), self.affine_params_groups.to(acc),
                                   offset=1.0, stats_of_x=of_x, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_vectors={self.num_vectors}, norm={self.param_free_norm.norm!r}"


class SCC(nn.Module):
    """Semantic convolution: ``y = sum_k V_k * conv_k(x)`` over K candidate convolutions without bias.

    The K candidates are computed as ONE ``conv2d`` with the K weights concatenated (K * Cout outputs),
    viewed as (N, K, Cout, H, W) and mixed per pixel by the semantic vectors in one fused pass
    (:func:`semnorm.functional.candidate_combine`). Parameter names are the published
    ``conv_bases.{k}.weight`` (``weight_orig``, ``weight_u``, ``weight_v`` with ``spectral=True``,
    as in the published generator, via ``torch.nn.utils.spectral_norm``).

    Args:
        in_channels: channels of x.
        out_channels: channels of y.
        num_candidates: number K of candidate convolutions (= number of semantic vectors).
        kernel_size: odd kernel size (published: 3), zero padding ``kernel_size // 2``, stride 1.
        spectral: apply ``torch.nn.utils.spectral_norm`` to each candidate conv.
        impl: semnorm implementation for the combine op ("native", "triton", "reference" or None: automatic).
    """

    def __init__(self, in_channels: int, out_channels: int, num_candidates: int, kernel_size: int = 3,
                 spectral: bool = False, impl: str | None = None) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"semnorm.SCC: kernel_size must be a positive odd int, got {kernel_size!r}")
        if not isinstance(num_candidates, int) or num_candidates <= 0:
            raise ValueError(f"semnorm.SCC: num_candidates must be a positive int, got {num_candidates!r}")
        self.in_channels, self.out_channels, self.num_candidates = in_channels, out_channels, num_candidates
        self.kernel_size, self.spectral, self.impl = kernel_size, bool(spectral), impl
        bases = []
        for _ in range(num_candidates):
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
            bases.append(nn.utils.spectral_norm(conv) if spectral else conv)
        self.conv_bases = nn.ModuleList(bases)

    def candidate_weight(self) -> torch.Tensor:
        """The K candidate kernels concatenated: (K * Cout, Cin, k, k).

        With spectral norm, runs each base's spectral-norm hook first (a power iteration in training
        mode, exactly as calling the conv module would), so ``weight_u`` / ``weight_v`` evolve as in
        the published code.
        """
        weights = []
        for conv in self.conv_bases:
            for hook in conv._forward_pre_hooks.values():
                hook(conv, None)
            weights.append(conv.weight)
        return torch.cat(weights, dim=0)

    def forward(self, x: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """x (N, Cin, H, W); vectors (N, K, H, W) at x's resolution. Returns (N, Cout, H, W)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"semnorm.SCC: x must have shape (N, {self.in_channels}, H, W), "
                             f"got {tuple(getattr(x, 'shape', ()))}")
        _check_vectors(vectors, x, self.num_candidates, "SCC")
        out = TF.conv2d(x, self.candidate_weight(), padding=self.kernel_size // 2)
        n, _, h, w = out.shape
        candidates = out.view(n, self.num_candidates, self.out_channels, h, w)
        return F.candidate_combine(vectors.to(candidates.dtype), candidates, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, num_candidates={self.num_candidates}, "
                f"kernel_size={self.kernel_size}, spectral={self.spectral}")
