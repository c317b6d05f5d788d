"""Vectorized pure-PyTorch reference of every semnorm op.

These functions are the oracle of the test suite and the fallback wherever the compiled kernels are
absent. They follow SPEC.md sections 2 and 4 literally, use only differentiable PyTorch ops (so
autograd gives their gradients), and never loop over classes, regions or pixels in Python.
Arguments and shapes are those of the ``torch.ops.semnorm`` schemas (``csrc/semnorm.cpp``).
"""

from __future__ import annotations

import torch


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype for activations of ``dtype``: float64 stays, everything else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def nearest_indices(in_size: int, out_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Source indices of PyTorch's legacy 'nearest' resize from ``in_size`` to ``out_size``.

    Bit-exact with ``F.interpolate(mode='nearest')``, float32 arithmetic included.
    """
    dst = torch.arange(out_size, device=device)
    if out_size == in_size:
        return dst
    if out_size == 2 * in_size:
        return dst // 2
    scale = torch.tensor(in_size / out_size, dtype=torch.float32).item()  # rounded to float32 as in ATen
    scale_t = torch.tensor(scale, dtype=torch.float32, device=device)
    src = torch.floor(dst.to(torch.float32) * scale_t).to(torch.int64)
    return src.clamp(max=in_size - 1)


def sample_labels(labels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Labels (N, Hl, Wl) sampled at (height, width) with the nearest rule, as int64."""
    rows = nearest_indices(labels.shape[1], height, labels.device)
    cols = nearest_indices(labels.shape[2], width, labels.device)
    return labels.long()[:, rows][:, :, cols]


# ----------------------------------------------------------------------------------------------
# region pool / broadcast


def region_pool(x: torch.Tensor, labels: torch.Tensor, num_classes: int, mean: bool) -> tuple[torch.Tensor, torch.Tensor]:
    n, c, h, w = x.shape
    lab = sample_labels(labels, h, w).reshape(n, h * w)
    counts = torch.zeros(n, num_classes, dtype=torch.int64, device=x.device)
    counts.scatter_add_(1, lab, torch.ones_like(lab))
    acc = opmath_dtype(x.dtype)
    flat = x.reshape(n, c, h * w).transpose(1, 2).to(acc)  # (N, HW, C)
    pooled = torch.zeros(n, num_classes, c, dtype=acc, device=x.device)
    pooled = pooled.scatter_add(1, lab.unsqueeze(-1).expand(n, h * w, c), flat)
    if mean:
        pooled = pooled / counts.clamp(min=1).unsqueeze(-1).to(acc)
    return pooled.to(x.dtype), counts


def region_broadcast(codes: torch.Tensor, labels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    n, _, c = codes.shape
    lab = sample_labels(labels, height, width).reshape(n, height * width)
    out = codes.gather(1, lab.unsqueeze(-1).expand(n, height * width, c))  # (N, HW, C)
    return out.transpose(1, 2).reshape(n, c, height, width)


# ----------------------------------------------------------------------------------------------
# semantic modulate (SCN) / candidate combine (SCC)


def semantic_modulate(
    x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, vectors: torch.Tensor, bank: torch.Tensor, offset: float = 1.0
) -> torch.Tensor:
    acc = opmath_dtype(x.dtype)
    c = x.shape[1]
    gb = torch.einsum("nkhw,kd->ndhw", vectors.to(acc), bank.to(acc))  # (N, 2C, H, W)
    gamma, beta = gb[:, :c], gb[:, c:]
    xhat = (x.to(acc) - mean.to(acc)[:, :, None, None]) * rstd.to(acc)[:, :, None, None]
    return (xhat * (offset + gamma) + beta).to(x.dtype)


def candidate_combine(vectors: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    acc = opmath_dtype(vectors.dtype)
    return torch.einsum("nkhw,nkchw->nchw", vectors.to(acc), candidates.to(acc)).to(vectors.dtype)


def semantic_vectors(logits: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    acc = opmath_dtype(logits.dtype)
    return torch.softmax(logits.to(acc) * temperature, dim=1).to(logits.dtype)
