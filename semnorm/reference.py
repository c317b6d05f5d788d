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
# channel moments / normalize-modulate


def effective_input(x: torch.Tensor, noise: torch.Tensor | None = None, noise_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``x + noise_scale[c] * noise[n, h, w]`` in x's opmath dtype (just ``x`` upcast without noise)."""
    xe = x.to(opmath_dtype(x.dtype))
    if noise is not None:
        xe = xe + noise_scale.view(1, -1, 1, 1) * noise.unsqueeze(1)
    return xe


def channel_moments(
    x: torch.Tensor, per_instance: bool, noise: torch.Tensor | None = None, noise_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and M2 (sum of squared deviations) per (n, c) or per channel, two-pass in opmath."""
    xe = effective_input(x, noise, noise_scale)
    dims = (2, 3) if per_instance else (0, 2, 3)
    mean = xe.mean(dims, keepdim=True)
    m2 = (xe - mean).square().sum(dims)
    return mean.reshape(m2.shape), m2


def own_statistics(xe: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, stats_of_x: str | None):
    """``(mean, rstd)`` with their values, carrying the gradient of x_eff's own statistics when ``stats_of_x``
    is "instance" or "batch" (the modulate ops' ``stats_of_x``); unchanged for None.

    The terms added are zero in value (``t - t.detach()``), so the forward is bit-identical, and their
    gradient is that of the biased mean and of ``rstd = (var + eps) ** -0.5`` (d rstd = -rstd**3 / 2 d var).
    """
    if stats_of_x is None:
        return mean, rstd
    dims = (2, 3) if stats_of_x == "instance" else (0, 2, 3)
    m = xe.mean(dims, keepdim=True)
    var = (xe - m).square().mean(dims, keepdim=True)
    shape = (-1, xe.shape[1])
    mean, rstd = mean.detach(), rstd.detach()
    mean = mean + (m - m.detach()).reshape(shape)
    rstd = rstd - 0.5 * rstd.pow(3) * (var - var.detach()).reshape(shape)
    return mean, rstd


def normalize_modulate(
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    gamma2: torch.Tensor | None = None,
    beta2: torch.Tensor | None = None,
    blend: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    noise_scale: torch.Tensor | None = None,
    offset: float = 1.0,
    stats_of_x: str | None = None,
) -> torch.Tensor:
    """``(x_eff - mean) * rstd * (offset + g) + b``, g/b dense or blended from two branches."""
    acc = opmath_dtype(x.dtype)
    xe = effective_input(x, noise, noise_scale)
    mean, rstd = own_statistics(xe, mean, rstd, stats_of_x)
    g, b = gamma.to(acc), beta.to(acc)
    if blend is not None:
        g = blend[0] * g + (1 - blend[0]) * gamma2.to(acc)
        b = blend[1] * b + (1 - blend[1]) * beta2.to(acc)
    y = (xe - mean[:, :, None, None]) * rstd[:, :, None, None] * (offset + g) + b
    return y.to(x.dtype)


# ----------------------------------------------------------------------------------------------
# class modulate (CLADE guided sampling + normalize + modulate)


def class_modulate(
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    scale_gamma: torch.Tensor | None = None,
    scale_beta: torch.Tensor | None = None,
    offset: float = 0.0,
    stats_of_x: str | None = None,
) -> torch.Tensor:
    """``y = (x - mean) * rstd * (offset + weight[l] * sg) + bias[l] * sb``, l = label at (h, w).

    Guided sampling is a gather of the banks' rows by label (``F.embedding``), never a one-hot.
    """
    n, c, h, w = x.shape
    acc = opmath_dtype(x.dtype)
    lab = sample_labels(labels, h, w)  # (N, H, W) int64
    gamma = torch.nn.functional.embedding(lab, weight.to(acc)).permute(0, 3, 1, 2)  # (N, C, H, W) view
    beta = torch.nn.functional.embedding(lab, bias.to(acc)).permute(0, 3, 1, 2)
    if scale_gamma is not None:
        gamma = gamma * scale_gamma.to(acc).unsqueeze(1)
    if scale_beta is not None:
        beta = beta * scale_beta.to(acc).unsqueeze(1)
    mean, rstd = own_statistics(x.to(acc), mean, rstd, stats_of_x)
    xhat = (x.to(acc) - mean.to(acc).view(n, c, 1, 1)) * rstd.to(acc).view(n, c, 1, 1)
    return (xhat * (offset + gamma) + beta).to(x.dtype).contiguous()


# ----------------------------------------------------------------------------------------------
# label conv (label_tap_gather)


def label_tap_gather(table: torch.Tensor, labels: torch.Tensor, kernel_size: int, height: int, width: int) -> torch.Tensor:
    """``out[n, o, h, w] = sum_taps table[t, o, tap, label(h + dy, w + dx)]``, zero outside the image.

    The sampled label map is padded with an extra "outside" class ``L`` whose table column is zero, so
    zero padding is one more gather; one gather per tap (k*k of them), none per class or pixel.
    """
    t_count, c, kk, num_classes = table.shape
    n = labels.shape[0]
    r = kernel_size // 2
    acc = opmath_dtype(table.dtype)
    lab = sample_labels(labels, height, width)
    lab = torch.nn.functional.pad(lab, (r, r, r, r), value=num_classes)  # (N, H + 2r, W + 2r)
    tab = torch.cat([table.to(acc), table.new_zeros(t_count, c, kk, 1, dtype=acc)], dim=3)  # (T, C, kk, L + 1)
    tab = tab.expand(n, c, kk, num_classes + 1)
    out = None
    for ty in range(kernel_size):
        for tx in range(kernel_size):
            idx = lab[:, ty : ty + height, tx : tx + width].reshape(n, 1, height * width).expand(n, c, height * width)
            term = tab[:, :, ty * kernel_size + tx].gather(2, idx)
            out = term if out is None else out + term
    return out.reshape(n, c, height, width).to(table.dtype)


# ----------------------------------------------------------------------------------------------
# semantic modulate (SCN) / candidate combine (SCC)


def semantic_modulate(
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    vectors: torch.Tensor,
    bank: torch.Tensor,
    offset: float = 1.0,
    stats_of_x: str | None = None,
) -> torch.Tensor:
    acc = opmath_dtype(x.dtype)
    c = x.shape[1]
    mean, rstd = own_statistics(x.to(acc), mean, rstd, stats_of_x)
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


# ----------------------------------------------------------------------------------------------
# intra-class positional encoding (CLADE-ICPE)


_NEIGHBOURS_8 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def connected_components(labels: torch.Tensor, ignore_label: int = -1) -> torch.Tensor:
    """8-connected components of every class: (N, H, W) int64 component ids, -1 for ignored pixels.

    Each component's id is the smallest flat index (h * W + w) of its pixels. Iterative label
    propagation: every pixel takes the minimum id among itself and its same-class 8-neighbours, then
    jumps to the id held by that pixel (pointer jumping, which shortens the number of rounds from
    the components' diameter to roughly its logarithm on compact shapes); repeated until nothing
    changes. No loop over classes or pixels.
    """
    n, h, w = labels.shape
    lab = labels.long()
    valid = lab != ignore_label
    big = h * w  # larger than every pixel index: never wins a minimum
    idt = torch.int32 if h * w < 2**31 - 1 else torch.int64
    ids = torch.arange(h * w, device=lab.device, dtype=idt).view(1, h, w).expand(n, h, w)
    ids = torch.where(valid, ids, big)
    # Padded labels: -2 (ignored pixels) and -3 (outside) match no non-negative label.
    lab_m = torch.where(valid, lab, -2)
    lab_p = torch.full((n, h + 2, w + 2), -3, dtype=torch.int64, device=lab.device)
    lab_p[:, 1:-1, 1:-1] = lab_m
    # For each neighbour: False where it has the same label (those may pass their id on).
    differs = [lab_p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] != lab_m for dy, dx in _NEIGHBOURS_8]
    ids_p = torch.full((n, h + 2, w + 2), big, dtype=idt, device=lab.device)
    while True:
        ids_p[:, 1:-1, 1:-1] = ids
        new = ids.clone()
        for (dy, dx), diff in zip(_NEIGHBOURS_8, differs):
            shifted = ids_p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            torch.minimum(new, shifted.masked_fill(diff, big), out=new)
        for _ in range(2):  # pointer jumping; ids of ignored pixels stay big (clamped, then masked)
            flat = new.reshape(n, h * w)
            jumped = flat.gather(1, flat.clamp(max=h * w - 1).long()).view(n, h, w)
            new = torch.where(valid, torch.minimum(new, jumped), new)
        if torch.equal(new, ids):
            break
        ids = new
    ids = ids.long()
    return torch.where(valid, ids, torch.full_like(ids, -1))


def intra_class_positional(labels: torch.Tensor, ignore_label: int = -1, eps: float = 1e-5) -> torch.Tensor:
    n, h, w = labels.shape
    dev = labels.device
    comp = connected_components(labels, ignore_label)
    valid = comp >= 0
    # One global bin per (image, component root), plus a dump bin for ignored pixels.
    dump = n * h * w
    bins = torch.where(valid, comp + torch.arange(n, device=dev).view(n, 1, 1) * (h * w), dump).reshape(-1)
    rows = torch.arange(h, device=dev, dtype=torch.float64).view(1, h, 1).expand(n, h, w).reshape(-1)
    cols = torch.arange(w, device=dev, dtype=torch.float64).view(1, 1, w).expand(n, h, w).reshape(-1)
    size = dump + 1
    count = torch.zeros(size, dtype=torch.float64, device=dev).scatter_add(0, bins, torch.ones_like(rows))
    cen_r = torch.zeros(size, dtype=torch.float64, device=dev).scatter_add(0, bins, rows) / count.clamp(min=1)
    cen_c = torch.zeros(size, dtype=torch.float64, device=dev).scatter_add(0, bins, cols) / count.clamp(min=1)
    off = torch.stack([rows - cen_r[bins], cols - cen_c[bins]])  # (2, NHW)
    mx = torch.zeros(2, size, dtype=torch.float64, device=dev)
    mx = mx.scatter_reduce(1, bins.expand(2, -1), off.abs(), reduce="amax", include_self=True)
    denom = mx[:, bins] + eps
    d = torch.where(denom > 0, off / torch.where(denom > 0, denom, 1.0), 0.0)
    d = torch.where(valid.reshape(-1), d, 0.0)
    return d.view(2, n, h, w).transpose(0, 1).to(torch.float32).contiguous()
