"""SPADE: spatially-adaptive normalization (Park et al. 2019) on semnorm's ops."""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import nn

from .. import functional as F
from .._extension import choose_impl, op_namespace
from ..reference import sample_labels
from ._inputs import split_semantic_input
from .norm import ParamFreeNorm

FAST_MODES = ("auto", "always", "never")

# Table-gradient elements per chunk in _TapProjection's backward (4 MiB of float32).
_CHUNK_ELEMENTS = 1 << 20


class _TapProjection(torch.autograd.Function):
    """gamma or beta of the fast path, ``label_tap_gather(proj @ hidden.T, ids)``, with a backward in
    channel chunks.

    The (C, k*k, Q) tap table is as large as an activation at Q ~ 2000 (natural masks at 256 x 256),
    and so is its gradient. The forward frees the table once gathered; the backward turns each chunk
    of channels' table gradient into its share of the projections' and hidden vectors' gradients (two
    small matmuls) and frees it, so no whole table gradient exists beside the dense ones.
    ``proj`` (C, k*k, J) holds the second convolution's taps (and its bias, through the centre tap and
    the hidden vectors' constant column), ``hidden`` (Q, J) the hidden vectors, ``ids`` (N, H, W)
    int32 the index map; ``impl`` a kernel backend ("native" or "triton").
    """

    @staticmethod
    def table(proj: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The (1, C, k*k, Q) tap table: each tap's projection of each hidden vector."""
        c, kk, _ = proj.shape
        return (proj.reshape(c * kk, -1) @ hidden.t()).view(1, c, kk, -1)

    @staticmethod
    def forward(ctx, proj, hidden, ids, kernel_size, height, width, impl):
        table = _TapProjection.table(proj, hidden)
        ctx.save_for_backward(proj, hidden, ids)
        ctx.kernel_size, ctx.impl = kernel_size, impl
        return op_namespace(impl).label_tap_gather(table, ids, kernel_size, height, width)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        proj, hidden, ids = ctx.saved_tensors
        c, kk, j = proj.shape
        q = hidden.shape[0]
        backward_op = op_namespace(ctx.impl).label_tap_gather_backward
        grad_proj = torch.empty_like(proj) if ctx.needs_input_grad[0] else None
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[1] else None
        step = max(1, _CHUNK_ELEMENTS // (kk * q))
        for c0 in range(0, c, step):
            c1 = min(c, c0 + step)
            g = backward_op(grad_out[:, c0:c1].contiguous(), ids, 1, q, ctx.kernel_size).view((c1 - c0) * kk, q)
            g = g.to(proj.dtype)  # under autocast the table (and grad_out) may be half precision
            if grad_proj is not None:
                torch.mm(g, hidden, out=grad_proj[c0:c1].view(-1, j))
            if grad_hidden is not None:
                grad_hidden.addmm_(g.t(), proj[c0:c1].reshape(-1, j))
        return grad_proj, grad_hidden, None, None, None, None, None


class SPADE(nn.Module):
    """``y = N(x) * (1 + gamma) + beta`` with ``gamma, beta = conv(relu(conv(onehot(labels))))``.

    Parameter and buffer names are those of the published SPADE layer (``param_free_norm.*``,
    ``mlp_shared.0.*``, ``mlp_gamma.*``, ``mlp_beta.*``), so its checkpoints load with
    ``load_state_dict(strict=True)``. The first convolution over the one-hot map is computed as a
    label-indexed gather of weight columns (:func:`semnorm.functional.label_conv`), exactly.

    Fast path (SPEC section 4), exact: the hidden map of the first convolution takes few distinct
    values. A pixel whose k x k window lies inside one class ``l`` gets that class's vector; the
    others (near a class boundary or the image border) get one vector per distinct window of labels
    (exact packing of the labels into int64 words and torch.unique, no hashing). The hidden map is
    then a map of Q = L + D vector indices, and gamma and beta are a label convolution of that index
    map (:func:`semnorm.functional.label_tap_gather`) with the per-tap projections of the Q vectors
    by the second convolutions (one (2C * k*k, hidden) x (hidden, Q) matmul): no one-hot map and no
    dense hidden map, and the matmul scales with Q instead of the pixel count. With an edge map, a
    pixel is also a boundary pixel when any edge value in its window is nonzero, and boundary pixels
    are not deduplicated (edge values are floats). ``fast="auto"`` takes the fast path when Q is at
    most ``fast_threshold`` times the pixel count (natural masks: about 0.12 at 64 x 64, 0.04 at
    128 x 128; measured break-even about 0.4), and never while being traced by torch.compile (its graphs cannot branch on data);
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
        fast_threshold: largest (distinct hidden vectors / pixels) for which ``fast="auto"`` takes
            the fast path.
    """

    def __init__(self, num_features: int, label_nc: int, norm: str = "batch", kernel_size: int = 3,
                 hidden: int = 128, edge: bool = False, impl: str | None = None, fast: str = "auto",
                 fast_threshold: float = 0.35) -> None:
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

    def modulation(self, labels: torch.Tensor, size: tuple[int, int], edge: torch.Tensor | None = None,
                   scales: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense ``(gamma, beta)``, each (N, C, *size), from integer labels (N, Hl, Wl) at any resolution.

        By the fast path where it applies (``fast``; never under torch.compile), else by the dense
        convolutions over the hidden map.

        ``scales``: optional scalar tensors ``(s_gamma, s_beta)`` multiplying gamma and beta, applied to
        the second convolutions' weights and biases (the outputs are linear in them), so no dense pass
        is spent on the scaling (SEAN's blend weights).
        """
        if self.fast != "never" and not torch.compiler.is_compiling():
            fast = self._fast_modulation(labels, size, edge, scales)
            if fast is not None:
                return fast
        actv = torch.relu(self._hidden(labels, size, edge))
        if scales is None:
            return self.mlp_gamma(actv), self.mlp_beta(actv)
        return tuple(
            TF.conv2d(actv, conv.weight * s.to(conv.weight.dtype), conv.bias * s.to(conv.bias.dtype), conv.stride,
                      conv.padding)
            for conv, s in zip((self.mlp_gamma, self.mlp_beta), scales)
        )

    # ------------------------------------------------------------------------------------------
    # fast path pieces

    def _padded_labels(self, labels: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(labels sampled at size (N, H, W) int64, the same padded by r = k // 2 with the value label_nc, r)."""
        lab = sample_labels(labels, int(size[0]), int(size[1]))
        radius = self.kernel_size // 2
        padded = TF.pad(lab, (radius, radius, radius, radius), value=self.label_nc) if radius else lab
        return lab, padded, radius

    def boundary_mask(self, labels: torch.Tensor, size: tuple[int, int], edge: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """(N, H, W) bool: pixels whose hidden vector is not one of the per-class vectors.

        True where the k x k window (the first convolution's) of the labels sampled at ``size``
        leaves the image, holds more than one class, or (edge layers) holds a nonzero edge value.
        A function of the labels (and edge map) and ``size`` only.
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
        """(B, (2r+1)^2) labels of each pixel's window, label_nc outside the image."""
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

    def _hidden_table(self, digits: torch.Tensor, edge_part: torch.Tensor | None) -> torch.Tensor:
        """Activated hidden vectors (L + D, hidden): one per class (a window inside one class), then
        one per row of ``digits`` (D, k*k) (a window's labels, label_nc outside the image), plus
        ``edge_part`` (D, hidden) (the edge channel's share) when given. Differentiable in the weights."""
        k, num_classes = self.kernel_size, self.label_nc
        conv = self.mlp_shared[0]
        w1 = conv.weight[:, :num_classes]  # (hidden, L, k, k)
        per_class = w1.sum((2, 3)).t()  # (L, hidden)
        # tap-major table of weight columns with a zero column for 'outside the image'
        table = TF.pad(w1, (0, 0, 0, 0, 0, 1)).permute(2, 3, 1, 0).reshape(k * k * (num_classes + 1), -1)
        offsets = torch.arange(k * k, device=digits.device) * (num_classes + 1)
        per_window = TF.embedding_bag(digits + offsets, table, mode="sum")  # (D, hidden)
        if edge_part is not None:
            per_window = per_window + edge_part.to(per_window.dtype)
        return torch.relu(torch.cat([per_class, per_window]) + conv.bias)

    def _fast_modulation(self, labels: torch.Tensor, size: tuple[int, int], edge: torch.Tensor | None,
                         scales: tuple[torch.Tensor, torch.Tensor] | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(gamma, beta)`` by the exact fast path; None when ``fast="auto"`` finds too many distinct
        hidden vectors.

        The hidden map of the first convolution takes few distinct values: a pixel whose k x k window
        lies inside one class l gets the class vector ``h_l``, and the others (near a class boundary
        or the image border) one vector per distinct window of labels. Each pixel of the hidden map is
        replaced by the index of its vector (``ids``, Q = L + D values), the second convolutions'
        per-tap projections of the Q vectors form one (2C, k*k, Q) table (a matmul), and gamma and
        beta are the label convolution of ``ids`` with that table
        (:func:`semnorm.functional.label_tap_gather`): k*k gathered columns per output value instead
        of k*k*hidden multiply-adds, no one-hot and no hidden map.
        """
        size = tuple(size)
        k, num_classes, c = self.kernel_size, self.label_nc, self.num_features
        lab, padded, radius = self._padded_labels(labels, size)
        lo, hi = torch.aminmax(lab)
        if int(lo) < 0 or int(hi) >= num_classes:
            bad = int(lo) if int(lo) < 0 else int(hi)
            raise IndexError(f"semnorm.SPADE: labels must lie in [0, {num_classes}), found {bad}")
        mask = self._boundary_mask(lab, padded, radius, edge)
        n_idx, i_idx, j_idx = mask.nonzero(as_tuple=True)
        digits = self._window_digits(padded, radius, n_idx, i_idx, j_idx)
        edge_part = None
        if self.edge:  # edge values are floats: one vector per boundary pixel, no deduplication
            inverse = torch.arange(n_idx.numel(), device=lab.device)
            conv = self.mlp_shared[0]
            edge_hidden = TF.conv2d(self._edge_map(edge, size, conv.weight.dtype), conv.weight[:, num_classes:],
                                    padding=conv.padding)
            edge_part = edge_hidden.permute(0, 2, 3, 1)[n_idx, i_idx, j_idx]
        elif n_idx.numel():
            inverse, rep = self._unique_rows(digits)
            digits = digits[rep]
        else:
            inverse = n_idx
        if self.fast == "auto" and num_classes + digits.shape[0] > self.fast_threshold * lab.numel():
            return None
        ids = lab.index_put((n_idx, i_idx, j_idx), inverse + num_classes)
        hidden = self._hidden_table(digits, edge_part)  # (Q, hidden)
        # a constant input 1 carries the second convolutions' bias, through the centre tap only (it
        # is inside the image at every pixel), so the matmul's output is the whole table
        hidden = TF.pad(hidden, (0, 1), value=1.0)
        centre = torch.zeros(k * k, 1, dtype=hidden.dtype, device=hidden.device)
        centre[(k * k) // 2] = 1
        ids = ids.to(torch.int32)

        impl = choose_impl(self.impl, lab.device, "label_tap_gather")

        def modulation(conv: nn.Conv2d, scale: torch.Tensor | None) -> torch.Tensor:
            # (1, C, k*k, Q) per-tap projections of the Q hidden vectors, then the label convolution
            w2 = conv.weight.permute(0, 2, 3, 1).to(hidden.dtype)  # (C, k, k, hidden)
            w2 = torch.cat([w2.reshape(c, k * k, -1), conv.bias.to(hidden.dtype).view(c, 1, 1) * centre], 2)
            if scale is not None:
                w2 = w2 * scale.to(w2.dtype)
            if impl != "reference":
                return _TapProjection.apply(w2, hidden, ids, k, size[0], size[1], impl)
            return F.label_tap_gather(_TapProjection.table(w2, hidden), ids, k, size[0], size[1], impl=impl)

        scales = (None, None) if scales is None else scales
        return modulation(self.mlp_gamma, scales[0]), modulation(self.mlp_beta, scales[1])

    def forward(self, x: torch.Tensor, labels: torch.Tensor, edge: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, C, H, W); labels (N, Hl, Wl) integer or (N, label_nc [+1], Hl, Wl) one-hot; edge (N, 1, Hl, Wl)."""
        labels, edge = split_semantic_input(labels, self.label_nc, self.edge, "SPADE", edge)
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"semnorm.SPADE: x must have shape (N, {self.num_features}, H, W), got {tuple(x.shape)}")
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"semnorm.SPADE: labels must have x's batch size {x.shape[0]}, got {tuple(labels.shape)}")
        mean, rstd, of_x = self.param_free_norm.stats(x, impl=self.impl)
        gamma, beta = self.modulation(labels, x.shape[-2:], edge)
        return F.normalize_modulate(x, mean, rstd, gamma.to(x.dtype), beta.to(x.dtype), offset=1.0, stats_of_x=of_x,
                                    impl=self.impl)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, edge={self.edge}, fast={self.fast!r}"
