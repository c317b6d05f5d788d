"""SPADE: spatially-adaptive normalization (Park et al. 2019) on semnorm's ops."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import nn

from .. import functional as F
from ..reference import opmath_dtype, sample_labels
from ._inputs import split_semantic_input
from .norm import ParamFreeNorm

FAST_MODES = ("auto", "always", "never")


class SPADE(nn.Module):
    """``y = N(x) * (1 + gamma) + beta`` with ``gamma, beta = conv(relu(conv(onehot(labels))))``.

    Parameter and buffer names are those of the published SPADE layer (``param_free_norm.*``,
    ``mlp_shared.0.*``, ``mlp_gamma.*``, ``mlp_beta.*``), so its checkpoints load with
    ``load_state_dict(strict=True)``. The first convolution over the one-hot map is computed as a
    label-indexed gather of weight columns (:func:`semnorm.functional.label_conv`), exactly.

    Fast path (SPEC section 4), exact: the modulation at a pixel depends only on the labels within
    ``r = 2 * (k // 2)`` pixels (its "pattern", with a distinct value for outside the image). A pixel
    whose pattern lies inside the image and inside one class ``l`` gets the per-class values
    ``G[l], B[l]`` (the network on a constant map of class l, computed once per call from the
    weights); all pixels go through one :func:`semnorm.functional.class_modulate` with those tables
    (no dense gamma/beta, no one-hot map). The other ("boundary") pixels, near a class boundary or the
    image border, are grouped by distinct pattern (exact packing of the labels into int64 words and
    torch.unique, no hashing); the network is evaluated once per distinct pattern (hidden vectors
    from distinct k x k sub-patterns as gathered weight columns, then an embedding bag over
    per-tap projections or one patch matmul) and the boundary pixels of the output are overwritten.
    With an edge map, a pixel is also boundary when any edge value in its neighbourhood is nonzero,
    and boundary pixels are not deduplicated (edge values are floats). ``fast="auto"`` takes the
    fast path when the distinct boundary patterns are at most ``fast_threshold`` times the pixel
    count, and never while being traced by torch.compile (its graphs cannot branch on data);
    "always"/"never" force it. Outputs and gradients equal the dense path to float rounding.

    Args:
        num_features: channels C of x.
        label_nc: number of classes L (including a don't-care class if the dataset has one).
        norm: "batch", "instance" or "syncbatch".
        kernel_size: kernel of the three convolutions (published: 3).
        hidden: channels of the shared hidden layer (published: 128).
        edge: whether the published input has an extra instance-edge channel (mlp_shared then takes
            ``label_nc + 1`` input channels; pass the edge map as ``edge`` or as the last one-hot channel).
        impl: semnorm implementation for every op ("native", "triton", "reference" or None: automatic).
        fast: "auto", "always" or "never" (boundary-only evaluation of the modulation network).
        fast_threshold: largest (distinct boundary patterns / pixels) for which ``fast="auto"`` takes
            the fast path.
    """

    #: the per-sub-pattern projection (embedding bag) is used when distinct k x k sub-patterns are
    #: fewer than this fraction of the distinct patterns; else one patch matmul per pattern
    _bag_ratio: float = 0.8

    def __init__(self, num_features: int, label_nc: int, norm: str = "batch", kernel_size: int = 3,
                 hidden: int = 128, edge: bool = False, impl: str | None = None, fast: str = "auto",
                 fast_threshold: float = 0.5) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"semnorm.SPADE: kernel_size must be odd, got {kernel_size}")
        if fast not in FAST_MODES:
            raise ValueError(f"semnorm.SPADE: fast must be one of {FAST_MODES}, got {fast!r}")
        self.num_features, self.label_nc, self.edge, self.impl = num_features, label_nc, edge, impl
        self.kernel_size, self.fast, self.fast_threshold = kernel_size, fast, float(fast_threshold)
        pad = kernel_size // 2
        self.param_free_norm = ParamFreeNorm(num_features, norm)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc + int(edge), hidden, kernel_size, padding=pad), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, num_features, kernel_size, padding=pad)
        self.mlp_beta = nn.Conv2d(hidden, num_features, kernel_size, padding=pad)

    # ------------------------------------------------------------------------------------------
    # dense modulation

    def _hidden(self, labels: torch.Tensor, size: tuple[int, int], edge: torch.Tensor | None) -> torch.Tensor:
        """Pre-activation hidden map (N, hidden, *size) of the first convolution."""
        conv = self.mlp_shared[0]
        weight = conv.weight[:, : self.label_nc] if self.edge else conv.weight
        hidden = F.label_conv(labels, weight, conv.bias, size=tuple(size), impl=self.impl)
        if self.edge:
            edge = self._edge_map(edge, size, hidden.dtype)
            hidden = hidden + TF.conv2d(edge, conv.weight[:, self.label_nc:], padding=conv.padding)
        return hidden

    def _edge_map(self, edge: torch.Tensor | None, size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        if edge is None:
            raise ValueError("semnorm.SPADE: this layer was built with edge=True and needs an edge map")
        return TF.interpolate(edge.to(dtype), size=tuple(size), mode="nearest")

    def modulation(self, labels: torch.Tensor, size: tuple[int, int], edge: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense ``(gamma, beta)``, each (N, C, *size), from integer labels (N, Hl, Wl) at any resolution."""
        actv = torch.relu(self._hidden(labels, size, edge))
        return self.mlp_gamma(actv), self.mlp_beta(actv)

    # ------------------------------------------------------------------------------------------
    # fast path pieces

    def _padded_labels(self, labels: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(labels sampled at size (N, H, W) int64, the same padded by r with the value label_nc, r)."""
        lab = sample_labels(labels, int(size[0]), int(size[1]))
        radius = 2 * (self.kernel_size // 2)
        padded = TF.pad(lab, (radius, radius, radius, radius), value=self.label_nc) if radius else lab
        return lab, padded, radius

    def boundary_mask(self, labels: torch.Tensor, size: tuple[int, int], edge: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """(N, H, W) bool: pixels whose modulation needs the convolutions.

        True where the ``(2r+1)^2`` neighbourhood (``r = 2 * (kernel_size // 2)``) of the labels
        sampled at ``size`` leaves the image, holds more than one class, or (edge layers) holds a
        nonzero edge value. A function of the labels (and edge map) and ``size`` only.
        """
        return self._boundary_mask(*self._padded_labels(labels, size), edge)

    def _boundary_mask(self, lab: torch.Tensor, padded: torch.Tensor, radius: int,
                       edge: torch.Tensor | None) -> torch.Tensor:
        n, height, width = lab.shape
        if radius == 0:
            mask = torch.zeros(n, height, width, dtype=torch.bool, device=lab.device)
        else:
            win = 2 * radius + 1
            labf = padded.to(torch.float64).unsqueeze(1)  # exact for any label value
            mask = (TF.max_pool2d(labf, win, 1) != -TF.max_pool2d(-labf, win, 1)).squeeze(1)
        if self.edge:
            nz = (self._edge_map(edge, (height, width), torch.float32) != 0).any(1, keepdim=True).to(torch.float32)
            if radius > 0:
                nz = TF.max_pool2d(nz, 2 * radius + 1, 1, radius)
            mask = mask | (nz.squeeze(1) > 0)
        return mask

    def _window_digits(self, padded: torch.Tensor, radius: int, n_idx: torch.Tensor, i_idx: torch.Tensor,
                       j_idx: torch.Tensor) -> torch.Tensor:
        """(B, (2r+1)^2) labels of each pixel's neighbourhood, label_nc outside the image."""
        win = 2 * radius + 1
        n, hp, wp = padded.shape
        taps = torch.arange(win, device=padded.device)
        offsets = (taps.view(win, 1) * wp + taps.view(1, win)).reshape(-1)
        base = (n_idx * hp + i_idx) * wp + j_idx
        return padded.reshape(-1)[base.unsqueeze(1) + offsets.unsqueeze(0)]

    def _unique_rows(self, digits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distinct rows of a (B, D) matrix of digits in [0, label_nc]: (inverse (B,) in [0, U), representative (U,)).

        Exact: the digits are packed into int64 words of base ``label_nc + 1`` and the words ranked
        one by one with torch.unique (no hashing, no collisions).
        """
        radix = self.label_nc + 1
        per_word = 1
        while radix ** (per_word + 1) < 2 ** 62:
            per_word += 1
        ids = None
        for start in range(0, digits.shape[1], per_word):
            word = digits[:, start]
            for t in range(start + 1, min(start + per_word, digits.shape[1])):
                word = word * radix + digits[:, t]
            rank = torch.unique(word, return_inverse=True)[1]
            ids = rank if ids is None else torch.unique(ids * (int(rank.max()) + 1) + rank, return_inverse=True)[1]
        count = int(ids.max()) + 1
        rep = torch.empty(count, dtype=torch.long, device=ids.device).scatter_(
            0, ids, torch.arange(ids.numel(), device=ids.device))
        return ids, rep

    def _patterns(self, padded: torch.Tensor, radius: int, n_idx: torch.Tensor, i_idx: torch.Tensor,
                  j_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distinct (2r+1)^2 label patterns of the given pixels: (inverse (B,) in [0, U), representative (U,))."""
        return self._unique_rows(self._window_digits(padded, radius, n_idx, i_idx, j_idx))

    def _pattern_modulation(self, patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma, beta (U, C) of distinct (2k-1)^2 label patterns (U, (2k-1)^2), exactly.

        The k*k hidden vectors a pattern feeds to the second convolution depend on k x k
        sub-patterns, fewer still once deduplicated (Q of them): hidden ``h_q`` is a sum of k*k
        gathered weight columns of the first convolution (zero where the sub-pattern's centre is
        outside the image: the hidden map's zero padding). Each pattern's k*k hidden vectors are
        gathered into a (U, k*k*hidden) patch matrix, and one matmul with the gamma/beta weights
        gives its output. No dense hidden map is built.
        """
        k = self.kernel_size
        win = 2 * k - 1
        dev = patterns.device
        taps = torch.arange(k, device=dev)
        inner = (taps.view(k, 1) * win + taps.view(1, k)).reshape(-1)  # a k x k window at offset 0
        subs = patterns[:, inner.view(1, -1) + inner.view(-1, 1)]  # (U, k*k positions, k*k digits)
        sub_ids, sub_rep = self._unique_rows(subs.reshape(-1, k * k))
        sub_digits = subs.reshape(-1, k * k)[sub_rep]  # (Q, k*k)
        conv = self.mlp_shared[0]
        hid = conv.weight.shape[0]
        w1 = TF.pad(conv.weight[:, : self.label_nc], (0, 0, 0, 0, 0, 1))  # (hid, L + 1, k, k), zero outside
        table = w1.permute(2, 3, 1, 0).reshape(k * k * (self.label_nc + 1), hid)
        offsets = torch.arange(k * k, device=dev) * (self.label_nc + 1)
        h = table.index_select(0, (sub_digits + offsets).reshape(-1)).view(-1, k * k, hid).sum(1)
        inside = (sub_digits[:, (k * k) // 2] != self.label_nc).unsqueeze(1).to(h.dtype)
        h = torch.relu(h + conv.bias) * inside  # (Q, hid); zero padding of the hidden map outside
        c = self.num_features
        w2 = torch.cat([self.mlp_gamma.weight, self.mlp_beta.weight], 0)  # (2C, hid, k, k)
        if sub_rep.numel() < self._bag_ratio * patterns.shape[0]:
            # few distinct sub-patterns: project each once per tap, P[q, t] = W_t h_q (one matmul),
            # then a pattern's output is the sum of its k*k rows P[q(u, t), t] (an embedding bag)
            proj = h @ w2.permute(1, 2, 3, 0).reshape(hid, k * k * 2 * c).to(h.dtype)  # (Q, k*k*2C)
            rows = sub_ids.view(-1, k * k) * (k * k) + torch.arange(k * k, device=dev)
            out = TF.embedding_bag(rows, proj.view(-1, 2 * c), mode="sum")
        else:
            # patches of the hidden map: (U, k*k*hid) gathered rows of h, then one matmul
            patches = h.index_select(0, sub_ids).view(-1, k * k * hid)
            out = patches @ w2.permute(0, 2, 3, 1).reshape(2 * c, -1).to(patches.dtype).t()
        out = out + torch.cat([self.mlp_gamma.bias, self.mlp_beta.bias], 0).to(out.dtype)
        return out[:, :c], out[:, c:]

    def class_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class ``(G, B)``, each (label_nc, C): gamma/beta of the network on a constant map of class l
        (an interior pixel's values). Differentiable in the weights."""
        conv = self.mlp_shared[0]
        w1 = conv.weight[:, : self.label_nc].sum((2, 3))  # (hidden, L)
        h = torch.relu(w1.t() + conv.bias)  # (L, hidden)
        g = h @ self.mlp_gamma.weight.sum((2, 3)).t() + self.mlp_gamma.bias
        b = h @ self.mlp_beta.weight.sum((2, 3)).t() + self.mlp_beta.bias
        return g, b

    def _boundary_modulation(self, actv: torch.Tensor, n_idx: torch.Tensor, i_idx: torch.Tensor,
                             j_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma, beta (B, C) at the given pixels from the activated hidden map (N, hidden, H, W)."""
        k = self.kernel_size
        pad = k // 2
        n, hid, height, width = actv.shape
        hp, wp = height + 2 * pad, width + 2 * pad
        rows = TF.pad(actv, (pad, pad, pad, pad)).permute(0, 2, 3, 1).reshape(n * hp * wp, hid)
        base = (n_idx * hp + i_idx) * wp + j_idx
        taps = torch.arange(k, device=actv.device)
        offsets = (taps.view(k, 1) * wp + taps.view(1, k)).reshape(-1)
        # index_select (backward: index_add_) rather than advanced indexing (backward: a slow accumulate)
        patches = rows.index_select(0, (base.unsqueeze(1) + offsets.unsqueeze(0)).reshape(-1)).view(base.numel(), k * k * hid)
        c = self.num_features
        weight = torch.cat([self.mlp_gamma.weight, self.mlp_beta.weight], 0).permute(0, 2, 3, 1).reshape(2 * c, -1)
        bias = torch.cat([self.mlp_gamma.bias, self.mlp_beta.bias], 0)
        out = torch.addmm(bias.to(patches.dtype), patches, weight.to(patches.dtype).t())
        return out[:, :c], out[:, c:]

    def _forward_fast(self, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, labels: torch.Tensor,
                      edge: torch.Tensor | None) -> torch.Tensor | None:
        """The exact fast path; None when ``fast="auto"`` finds too many distinct patterns."""
        size = tuple(x.shape[-2:])
        acc = opmath_dtype(x.dtype)
        lab, padded, radius = self._padded_labels(labels, size)
        lo, hi = torch.aminmax(lab)
        if int(lo) < 0 or int(hi) >= self.label_nc:
            bad = int(lo) if int(lo) < 0 else int(hi)
            raise IndexError(f"semnorm.SPADE: labels must lie in [0, {self.label_nc}), found {bad}")
        mask = self._boundary_mask(lab, padded, radius, edge)
        n_idx, i_idx, j_idx = mask.nonzero(as_tuple=True)
        g_tab, b_tab = self.class_tables()
        if n_idx.numel() == 0:
            return F.class_modulate(x, mean, rstd, lab, g_tab.to(acc), b_tab.to(acc), offset=1.0, impl=self.impl)
        if self.edge:  # edge values are part of the pattern: no deduplication, one row per boundary pixel
            ids = torch.arange(n_idx.numel(), device=lab.device)
            if self.fast == "auto" and ids.numel() > self.fast_threshold * lab.numel():
                return None
            actv = torch.relu(self._hidden(lab, size, edge))
            gamma, beta = self._boundary_modulation(actv, n_idx, i_idx, j_idx)
        else:
            digits = self._window_digits(padded, radius, n_idx, i_idx, j_idx)
            ids, rep = self._unique_rows(digits)
            if self.fast == "auto" and rep.numel() > self.fast_threshold * lab.numel():
                return None
            gamma, beta = self._pattern_modulation(digits[rep])
        y = F.class_modulate(x, mean, rstd, lab, g_tab.to(acc), b_tab.to(acc), offset=1.0, impl=self.impl)
        # overwrite the boundary pixels, sample by sample, as (C, B_n) column gathers (cache friendly)
        c, width = x.shape[1], size[1]
        # (C, B) per-pixel values: each sample's block is then a (C, B_n) view with contiguous rows
        gamma_b = gamma.to(acc).t().contiguous().index_select(1, ids)
        beta_b = beta.to(acc).t().contiguous().index_select(1, ids)
        pix = i_idx * width + j_idx
        counts = torch.bincount(n_idx, minlength=x.shape[0]).tolist()
        outs = []
        # unbind/split (backward: one stack/cat) rather than indexing per sample (backward: a full-size
        # zero tensor per sample)
        per_sample = zip(y.unbind(0), x.unbind(0), mean.unbind(0), rstd.unbind(0), pix.split(counts),
                         gamma_b.split(counts, 1), beta_b.split(counts, 1))
        for yn, xn, mn, rn, p, gn, bn in per_sample:
            yn = yn.reshape(c, -1)
            if p.numel():
                xn = xn.reshape(c, -1).index_select(1, p).to(acc)
                xhat = (xn - mn.unsqueeze(1)) * rn.unsqueeze(1)
                vals = xhat * (1 + gn) + bn
                yn = yn.index_copy(1, p, vals.to(x.dtype))
            outs.append(yn)
        return torch.stack(outs).view(y.shape)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, edge: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C, H, W); labels (N, Hl, Wl) integer or (N, label_nc [+1], Hl, Wl) one-hot; edge (N, 1, Hl, Wl)."""
        labels, edge = split_semantic_input(labels, self.label_nc, self.edge, "SPADE", edge)
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"semnorm.SPADE: x must have shape (N, {self.num_features}, H, W), got {tuple(x.shape)}")
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"semnorm.SPADE: labels must have x's batch size {x.shape[0]}, got {tuple(labels.shape)}")
        mean, rstd = self.param_free_norm(x, impl=self.impl)
        if self.fast != "never" and not torch.compiler.is_compiling():
            y = self._forward_fast(x, mean, rstd, labels, edge)
            if y is not None:
                return y
        gamma, beta = self.modulation(labels, x.shape[-2:], edge)
        return F.normalize_modulate(x, mean, rstd, gamma.to(x.dtype), beta.to(x.dtype), offset=1.0, impl=self.impl)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, edge={self.edge}, fast={self.fast!r}"
