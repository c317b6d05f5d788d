"""Inputs for tests and benchmarks: label maps drawn like natural segmentation masks.

A regular grid of classes flatters pattern-based methods (SPEC section 6), so tests and benchmarks
draw masks with irregular boundaries: a few classes per image, each region a warped Voronoi cell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def natural_labels(
    batch: int,
    height: int,
    width: int,
    num_classes: int,
    classes_per_image: int = 8,
    regions_per_image: int | None = None,
    warp: float = 0.25,
    dtype: torch.dtype = torch.int64,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A (batch, height, width) label map with irregular regions, like a natural mask.

    Each image gets ``regions_per_image`` (default ``classes_per_image + 4``) seed points whose
    classes are drawn from ``classes_per_image`` classes sampled out of ``num_classes``; pixels go
    to the nearest seed under a distance warped by smooth random noise (strength ``warp``), which
    gives curved, jagged boundaries and several components per class.
    """
    g = generator
    regions = regions_per_image or classes_per_image + 4
    k = min(classes_per_image, num_classes)
    ys = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
    xs = torch.linspace(0, 1, width).view(1, width).expand(height, width)
    out = torch.empty(batch, height, width, dtype=torch.int64)
    for n in range(batch):
        classes = torch.randperm(num_classes, generator=g)[:k]
        seed_cls = classes[torch.randint(0, k, (regions,), generator=g)]
        seeds = torch.rand(regions, 2, generator=g)
        coarse = torch.randn(1, regions, 6, 6, generator=g)
        noise = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[0]
        dist = (ys - seeds[:, 0].view(-1, 1, 1)) ** 2 + (xs - seeds[:, 1].view(-1, 1, 1)) ** 2
        dist = dist.sqrt() + warp * noise
        out[n] = seed_cls[dist.argmin(0)]
    return out.to(dtype=dtype, device=device)


def onehot_to_labels(onehot: torch.Tensor) -> torch.Tensor:
    """(N, L, H, W) one-hot (or soft) semantic map -> (N, H, W) int64 labels (argmax over L)."""
    if onehot.dim() != 4:
        raise ValueError(f"semnorm: onehot must have shape (N, L, H, W), got {tuple(onehot.shape)}")
    return onehot.argmax(1)
