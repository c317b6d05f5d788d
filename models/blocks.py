"""Building blocks of the SPADE-lineage generators: the residual block with a per-block norm layer.

:class:`SemanticResBlock` is the published ``SPADEResnetBlock`` (COMPAT.md): ``fmiddle = min(fin,
fout)``, spectral-normed 3x3 ``conv_0`` / ``conv_1`` with bias and, when ``fin != fout``, a learned
1x1 shortcut ``conv_s`` without bias; the norm layers ``norm_0`` / ``norm_1`` / ``norm_s`` are SPADE,
CLADE or CLADE-ICPE (``ace_0`` / ``ace_1`` / ``ace_s`` for SEAN, the published names), chosen per
block, so mixed SPADE/CLADE generators (CLADE paper Table 6) are the same trunk. Also here: the
label-input convolution of the generators (:class:`LabelConv2d`), the published initialisation
(:func:`init_weights`) and switches that reach every semnorm layer of a network (:func:`set_impl`,
:func:`set_spade_fast`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import nn

from semnorm import functional as F
from semnorm.nn import CLADE, SCC, SCN, SEAN, SPADE

from .config import GeneratorConfig

__all__ = ["SemanticResBlock", "LabelConv2d", "make_norm", "init_weights", "set_impl", "set_spade_fast",
           "SEMNORM_LAYERS", "LEAKY_SLOPE"]

#: the semnorm layer classes a network may contain
SEMNORM_LAYERS = (SPADE, CLADE, SEAN, SCN, SCC)
#: slope of every leaky ReLU of the SPADE lineage
LEAKY_SLOPE = 0.2


# ----------------------------------------------------------------------------------------------
# network-wide switches and the published init


def set_impl(module: nn.Module, impl: str | None) -> nn.Module:
    """Set ``impl`` ("native", "triton", "reference" or None: automatic) on every submodule that has one.

    That is every semnorm layer (SPADE, CLADE, SEAN and its inner SPADE, SCN, SCC) and the networks
    of :mod:`semnorm.models` (their label convolutions and positional maps), so one call switches a
    whole generator between the fused kernels and the pure-PyTorch reference. Returns ``module``.
    """
    if impl not in (None, "native", "triton", "reference"):
        raise ValueError(f"set_impl: impl must be None, 'native', 'triton' or 'reference', got {impl!r}")
    for m in module.modules():
        if isinstance(m, SEMNORM_LAYERS) or hasattr(m, "impl"):
            m.impl = impl
    return module


def set_spade_fast(module: nn.Module, fast: str) -> nn.Module:
    """Set the exact fast path ("auto", "always", "never") of every SPADE layer in ``module``."""
    if fast not in ("auto", "always", "never"):
        raise ValueError(f"set_spade_fast: fast must be 'auto', 'always' or 'never', got {fast!r}")
    for m in module.modules():
        if isinstance(m, SPADE):
            m.fast = fast
    return module


@torch.no_grad()
def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """The published ``init_weights('xavier', 0.02)``: xavier-normal weights and zero biases.

    Applied to every Conv (incl. transposed) and Linear module, spectral-normed ones through their
    ``weight_orig``; bare ``nn.Parameter`` s of custom modules (CLADE's class bank, SEAN's blending
    scalars and noise scales) are left alone, as published. Returns ``module``.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            if weight.is_meta:  # full-size networks built on the meta device for counting
                continue
            nn.init.xavier_normal_(weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


# ----------------------------------------------------------------------------------------------
# label input


class LabelConv2d(nn.Conv2d):
    """The generator's first convolution on the label map, without building the one-hot map.

    An ``nn.Conv2d(semantic_nc, out, k, padding=k // 2)`` (published name ``fc``, keys ``weight``
    (out, semantic_nc, k, k) and ``bias``) applied to the one-hot labels resized (nearest) to ``size``:
    the class channels are a :func:`semnorm.functional.label_conv` (k*k gathered weight columns per
    pixel), the instance-edge channel (when ``edge_channels=1``) an ordinary convolution.

    Args:
        num_classes: class channels L of the one-hot map.
        out_channels: output channels.
        kernel_size: odd kernel (published 3).
        edge_channels: 0 or 1 extra instance-edge input channel.
    """

    def __init__(self, num_classes: int, out_channels: int, kernel_size: int = 3, edge_channels: int = 0,
                 impl: str | None = None) -> None:
        super().__init__(num_classes + edge_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.num_classes, self.edge_channels, self.impl = num_classes, edge_channels, impl

    def forward(self, labels: torch.Tensor, edge: torch.Tensor | None = None,  # type: ignore[override]
                size: tuple[int, int] | None = None) -> torch.Tensor:
        """labels (N, Hl, Wl) integer; edge (N, 1, He, We) when ``edge_channels``; returns (N, out, *size)."""
        size = tuple(labels.shape[-2:]) if size is None else tuple(size)
        weight = self.weight[:, : self.num_classes] if self.edge_channels else self.weight
        out = F.label_conv(labels, weight, self.bias, size=size, impl=self.impl)
        if self.edge_channels:
            if edge is None:
                raise ValueError("LabelConv2d: this convolution takes an instance-edge channel; pass edge (N, 1, H, W)")
            e = TF.interpolate(edge.to(out.dtype), size=size, mode="nearest")
            out = out + TF.conv2d(e, self.weight[:, self.num_classes:].to(out.dtype), padding=self.padding)
        return out


# ----------------------------------------------------------------------------------------------
# the residual block


def make_norm(layer: str, num_features: int, config: GeneratorConfig, use_style: bool = True) -> nn.Module:
    """The semnorm layer of kind ``layer`` ("spade", "clade", "clade_icpe", "sean") for ``num_features``
    channels, configured from ``config`` (classes, instance edges, param-free norm, ...)."""
    c = config
    if layer == "spade":
        return SPADE(num_features, c.num_classes, norm=c.norm, kernel_size=c.kernel_size, hidden=c.hidden,
                     edge=c.instance, impl=c.impl, fast=c.spade_fast)
    if layer in ("clade", "clade_icpe"):
        return CLADE(num_features, c.num_classes, norm=c.norm, edge=c.instance, positional=layer == "clade_icpe",
                     ignore_label=c.icpe_ignore_label, impl=c.impl)
    if layer == "sean":
        return SEAN(num_features, c.num_classes, style_dim=c.style_dim, norm=c.norm, use_style=use_style,
                    noise=c.sean_noise, impl=c.impl, kernel_size=c.kernel_size, hidden=c.hidden)
    raise ValueError(f"make_norm: layer must be one of 'spade', 'clade', 'clade_icpe', 'sean', got {layer!r}")


class SemanticResBlock(nn.Module):
    """The SPADE-lineage residual block with a semantic norm layer before each convolution.

    ``out = shortcut + conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x))))))`` with
    ``shortcut = conv_s(norm_s(x))`` when ``fin != fout`` (else x); leaky slope 0.2. The shortcut is
    computed first, as published (it sets the order of running-statistics updates and noise draws).

    Parameter names are the published ones: ``conv_0`` / ``conv_1`` / ``conv_s`` (``weight_orig``,
    ``weight_u``, ``weight_v`` with spectral norm; ``bias`` on conv_0 / conv_1) and the norm layers
    ``norm_0`` / ``norm_1`` / ``norm_s`` (``ace_0`` / ``ace_1`` / ``ace_s`` for SEAN). A CLADE layer
    with instance edges returns one extra channel, so the following convolution takes ``fin + 1`` /
    ``fmiddle + 1`` inputs, as in the published CLADE code.

    Args:
        fin, fout: input and output channels.
        layer: "spade", "clade", "clade_icpe" or "sean".
        config: the generator configuration (classes, edges, norm, spectral, SPADE/SEAN options).
        use_style: SEAN only: build the style branch (the published ``up_3`` has none).
    """

    def __init__(self, fin: int, fout: int, layer: str, config: GeneratorConfig, use_style: bool = True) -> None:
        super().__init__()
        self.fin, self.fout, self.layer = fin, fout, layer
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        extra = 1 if (layer in ("clade", "clade_icpe") and config.instance) else 0
        self.uses_edge = config.instance and layer != "sean"
        self.conv_0 = nn.Conv2d(fin + extra, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = nn.Conv2d(fmiddle + extra, fout, kernel_size=3, padding=1)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin + extra, fout, kernel_size=1, bias=False)
        if config.spectral:
            self.conv_0 = nn.utils.spectral_norm(self.conv_0)
            self.conv_1 = nn.utils.spectral_norm(self.conv_1)
            if self.learned_shortcut:
                self.conv_s = nn.utils.spectral_norm(self.conv_s)
        prefix = "ace" if layer == "sean" else "norm"
        self._norm_names = (f"{prefix}_0", f"{prefix}_1", f"{prefix}_s")
        setattr(self, self._norm_names[0], make_norm(layer, fin, config, use_style))
        setattr(self, self._norm_names[1], make_norm(layer, fmiddle, config, use_style))
        if self.learned_shortcut:
            setattr(self, self._norm_names[2], make_norm(layer, fin, config, use_style))

    def _norm(self, index: int, x: torch.Tensor, labels: torch.Tensor, edge: torch.Tensor | None,
              positional: torch.Tensor | None, style: torch.Tensor | None) -> torch.Tensor:
        norm = getattr(self, self._norm_names[index])
        if self.layer == "spade":
            return norm(x, labels, edge if self.uses_edge else None)
        if self.layer == "clade":
            return norm(x, labels, edge=edge if self.uses_edge else None)
        if self.layer == "clade_icpe":
            return norm(x, labels, edge=edge if self.uses_edge else None, positional_map=positional)
        return norm(x, labels, style)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, edge: torch.Tensor | None = None,
                positional: torch.Tensor | None = None, style: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block.

        Args:
            x: (N, fin, H, W) activations.
            labels: (N, Hl, Wl) integer labels at any resolution (each norm layer samples them).
            edge: (N, 1, He, We) instance-edge map (with instance edges).
            positional: (N, 2, Hd, Wd) CLADE-ICPE positional map (computed by the layer when None).
            style: (N, L, style_dim) SEAN style codes (blocks with a style branch).

        Returns:
            (N, fout, H, W).
        """
        if self.learned_shortcut:
            x_s = self.conv_s(self._norm(2, x, labels, edge, positional, style))
        else:
            x_s = x
        dx = self.conv_0(TF.leaky_relu(self._norm(0, x, labels, edge, positional, style), LEAKY_SLOPE))
        dx = self.conv_1(TF.leaky_relu(self._norm(1, dx, labels, edge, positional, style), LEAKY_SLOPE))
        return x_s + dx

    def extra_repr(self) -> str:
        return f"{self.fin} -> {self.fout}, layer={self.layer!r}"
