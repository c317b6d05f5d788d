"""The SPADE-trunk generators: SPADE (label input or VAE), CLADE, CLADE-ICPE, mixed SPADE/CLADE, SEAN.

All share the published SPADE trunk (COMPAT.md): a start tensor at ``(sh, sw) = crop // 2^n``
(n = 5 / 6 / 7 for 'normal' / 'more' / 'most'), then the residual blocks ``head_0``, ``G_middle_0``,
``G_middle_1``, ``up_0`` .. ``up_3`` (+ ``up_4`` with 'most') with nearest x2 upsampling between them,
and ``conv_img`` (3x3 -> RGB) after a leaky ReLU, then tanh. They differ only in the normalization
layer of each block (:class:`semnorm.models.blocks.SemanticResBlock`) and in what they start from:

* :class:`SPADEGenerator` (and its specialisations :class:`CLADEGenerator`, :class:`MixedGenerator`):
  a 3x3 convolution of the label map resized to (sh, sw), or with ``use_vae`` a linear layer on a latent
  code z (from the :class:`~semnorm.models.encoders.ConvEncoder` of an image, or sampled);
* :class:`SEANGenerator`: the label convolution, plus per-region style codes from its style encoder
  ``Zencoder`` fed to the SEAN layers of the first six blocks (``up_3`` is mask-only).

Parameter names are the published ones, so published ``net_G`` checkpoints load with
``load_state_dict(strict=True)`` (the VAE encoder, a separate ``net_E`` file in the published code,
lives under ``encoder.`` here: see :meth:`SPADEGenerator.load_published`).

Labels: every forward takes an integer label map (N, H, W) (values in [0, num_classes)) plus, with
instance edges, an edge map (N, 1, H, W) or an instance-id map, or the published one-hot map
(N, semantic_nc, H, W) whose last channel is the edge map. The norm layers sample the full-resolution
labels at their own size; no one-hot map is built.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as TF
from torch import nn

from semnorm import functional as F
from semnorm.nn._inputs import instance_edges, split_semantic_input

from .blocks import LEAKY_SLOPE, LabelConv2d, SemanticResBlock, init_weights
from .config import GeneratorConfig
from .encoders import ConvEncoder, Zencoder, reparameterize

__all__ = ["SPADEGenerator", "CLADEGenerator", "MixedGenerator", "SEANGenerator"]


class _Trunk(nn.Module):
    """Shared pieces of the SPADE-trunk generators (blocks, input handling, output head)."""

    config: GeneratorConfig

    def _build_trunk(self, config: GeneratorConfig, use_style: dict[str, bool] | None = None) -> None:
        layers = config.block_layers()
        for name, fin, fout in config.block_channels():
            style = True if use_style is None else use_style[name]
            setattr(self, name, SemanticResBlock(fin, fout, layers[name], config, use_style=style))
        final_nc = config.block_channels()[-1][2]
        self.conv_img = nn.Conv2d(final_nc, 3, 3, padding=1)
        self._upsampled = config.block_upsampled()

    def prepare_labels(self, labels: torch.Tensor, edge: torch.Tensor | None = None,
                       instance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(labels (N, H, W) integer, edge map (N, 1, H, W) or None)`` from any accepted label input."""
        c = self.config
        name = type(self).__name__
        labels, edge = split_semantic_input(labels, c.num_classes, c.instance, name, edge)
        if c.instance and edge is None:
            if instance is None:
                raise ValueError(f"{name}: this generator uses instance edges (instance=True); pass edge "
                                 f"(N, 1, H, W), instance (N, H, W) or a one-hot map with the edge channel last")
            edge = instance_edges(instance)
        return labels, edge

    def _run_trunk(self, x: torch.Tensor, labels: torch.Tensor, edge: torch.Tensor | None,
                   positional: torch.Tensor | None = None, style: torch.Tensor | None = None) -> torch.Tensor:
        for name in self.config.block_names:
            if self._upsampled[name]:
                x = TF.interpolate(x, scale_factor=2.0, mode="nearest")
            x = getattr(self, name)(x, labels, edge=edge, positional=positional, style=style)
        return torch.tanh(self.conv_img(TF.leaky_relu(x, LEAKY_SLOPE)))

    def _check_batch(self, labels: torch.Tensor, n: int, what: str) -> None:
        if labels.shape[0] != n:
            raise ValueError(f"{type(self).__name__}: {what} has batch size {n} but labels have {labels.shape[0]}")


class SPADEGenerator(_Trunk):
    """The SPADE generator (Park et al. 2019), with any SPADE-lineage norm layer per block.

    With ``config.layer == "spade"`` it is the published SPADE generator; "clade" / "clade_icpe" give
    the CLADE / CLADE-ICPE generators (same trunk, CLADE layers), and ``config.clade_from`` mixes SPADE
    at low and CLADE at high resolution (CLADE paper Table 6). :class:`CLADEGenerator` and
    :class:`MixedGenerator` are this class with their configurations checked.

    Start: ``fc`` = 3x3 conv (semantic_nc -> 16 ngf) on the label map resized (nearest) to (sh, sw)
    (a :class:`~semnorm.models.blocks.LabelConv2d`: gathered weight columns, no one-hot map), or with
    ``use_vae`` ``fc`` = Linear(z_dim -> 16 ngf * sh * sw) on z, reshaped to (N, 16 ngf, sh, sw).

    CLADE-ICPE: the 2-channel intra-class positional map is computed once per forward from the
    full-resolution labels (:func:`semnorm.functional.intra_class_positional`, every connected
    component of every class except ``config.icpe_ignore_label``) and shared by all CLADE-ICPE layers,
    which resize it (nearest) to their size, as the published layers resize the precomputed map.

    Args:
        config: the :class:`~semnorm.models.config.GeneratorConfig` (see
            :func:`semnorm.models.build_generator` for the presets).

    Shapes: ``labels`` (N, H, W) integer (or one-hot (N, semantic_nc, H, W)); output (N, 3, H, W) in
    [-1, 1] with (H, W) = ``config.output_size``.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        if config.layer == "sean":
            raise ValueError("SPADEGenerator: layer='sean' needs the style encoder; use SEANGenerator")
        self.config = c = config
        self.impl = c.impl
        nf = c.ngf
        sh, sw = c.latent_size
        if c.use_vae:
            self.fc = nn.Linear(c.z_dim, 16 * nf * sh * sw)
        else:
            self.fc = LabelConv2d(c.num_classes, 16 * nf, 3, edge_channels=int(c.instance), impl=c.impl)
        self._build_trunk(c)
        self.uses_positional = "clade_icpe" in c.block_layers().values()
        if c.use_vae:
            self.encoder = ConvEncoder(nf, c.z_dim, c.vae_input_size, spectral=c.spectral)
        init_weights(self)

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE encoder: image (N, 3, H, W) -> (mu, logvar), each (N, z_dim)."""
        if not self.config.use_vae:
            raise RuntimeError(f"{type(self).__name__}: built without use_vae, it has no image encoder")
        return self.encoder(image)

    def positional_map(self, labels: torch.Tensor) -> torch.Tensor:
        """CLADE-ICPE positional map D (N, 2, H, W) of integer labels (N, H, W)."""
        return F.intra_class_positional(labels, ignore_label=self.config.icpe_ignore_label, impl=self.impl)

    def forward(self, labels: torch.Tensor, image: torch.Tensor | None = None, z: torch.Tensor | None = None, *,
                edge: torch.Tensor | None = None, instance: torch.Tensor | None = None,
                positional: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Synthesize an image from a label map.

        Args:
            labels: (N, H, W) integer labels in [0, num_classes), or the published one-hot map
                (N, semantic_nc, H, W) (edge channel last with instance edges).
            image: (N, 3, Hi, Wi) real image for the VAE encoder (``use_vae`` only): z is drawn from
                its posterior ``mu + eps * exp(logvar / 2)``.
            z: (N, z_dim) latent code (``use_vae`` only); default: ``image``'s posterior, else N(0, I).
            edge: (N, 1, He, We) instance-edge map (instance edges only; overrides the one-hot channel).
            instance: (N, Hi, Wi) instance ids, turned into the edge map when no edge map is given.
            positional: (N, 2, Hd, Wd) precomputed CLADE-ICPE map (default: computed from the labels).

        Returns:
            the image (N, 3, H, W); with ``use_vae`` the tuple ``(image, mu, logvar)`` where mu and
            logvar (N, z_dim) are None unless ``image`` was encoded.
        """
        c = self.config
        labels, edge = self.prepare_labels(labels, edge, instance)
        n = labels.shape[0]
        mu = logvar = None
        if c.use_vae:
            if z is None:
                if image is not None:
                    mu, logvar = self.encoder(image)
                    z = reparameterize(mu, logvar)
                else:
                    z = torch.randn(n, c.z_dim, dtype=self.fc.weight.dtype, device=labels.device)
            if z.dim() != 2 or z.shape != (n, c.z_dim):
                raise ValueError(f"{type(self).__name__}: z must have shape (N={n}, z_dim={c.z_dim}), got {tuple(z.shape)}")
            sh, sw = c.latent_size
            x = self.fc(z.to(self.fc.weight.dtype)).view(n, 16 * c.ngf, sh, sw)
        else:
            if image is not None or z is not None:
                raise ValueError(f"{type(self).__name__}: image / z need use_vae=True (this generator starts from "
                                 f"the label map)")
            x = self.fc(labels, edge, size=c.latent_size)
        if self.uses_positional and positional is None:
            positional = self.positional_map(labels)
        out = self._run_trunk(x, labels, edge, positional)
        return (out, mu, logvar) if c.use_vae else out

    # ------------------------------------------------------------------------------------------
    # published checkpoints

    def published_state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{"G": net_G state dict, "E": net_E state dict}`` under the published names ("E" empty
        without the VAE): the layout of the published ``<epoch>_net_G.pth`` / ``<epoch>_net_E.pth``."""
        sd = self.state_dict()
        return {"G": {k: v for k, v in sd.items() if not k.startswith("encoder.")},
                "E": {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}}

    def load_published(self, net_G: Mapping[str, torch.Tensor], net_E: Mapping[str, torch.Tensor] | None = None,
                       strict: bool = True):
        """Load published state dicts (``module.`` prefixes stripped); ``net_E`` is the VAE encoder's.

        With ``strict``, every key of the generator (and of the encoder when ``net_E`` is given) must
        be present and no unknown key may appear. Returns ``load_state_dict``'s result.
        """
        def strip(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}

        merged = strip(net_G)
        if net_E is not None:
            if not self.config.use_vae:
                raise ValueError(f"{type(self).__name__}: net_E given but this generator has no VAE encoder")
            merged.update({f"encoder.{k}": v for k, v in strip(net_E).items()})
        if not strict or net_E is not None or not self.config.use_vae:
            return self.load_state_dict(merged, strict=strict)
        result = self.load_state_dict(merged, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("encoder.")]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"{type(self).__name__}.load_published: missing keys {missing}, unexpected keys "
                               f"{result.unexpected_keys}")
        return result


class CLADEGenerator(SPADEGenerator):
    """The CLADE generator (Tan et al.): the SPADE trunk with CLADE (``layer="clade"``) or CLADE-ICPE
    (``layer="clade_icpe"``) layers in every block; optional instance edges (``instance=True``: each
    CLADE layer appends a modulated edge channel, the block convolutions take one more input)."""

    def __init__(self, config: GeneratorConfig) -> None:
        if config.layer not in ("clade", "clade_icpe") or config.clade_from is not None:
            raise ValueError(f"CLADEGenerator: config.layer must be 'clade' or 'clade_icpe' with clade_from=None, "
                             f"got layer={config.layer!r}, clade_from={config.clade_from!r}")
        super().__init__(config)


class MixedGenerator(SPADEGenerator):
    """SPADE layers at low resolution, CLADE at high (CLADE paper Table 6): blocks numbered 1..7 from
    head_0 use SPADE before ``config.clade_from`` and CLADE from it on (``clade_from=6``: S(1-5)+C(6-7))."""

    def __init__(self, config: GeneratorConfig) -> None:
        if config.clade_from is None or config.layer != "spade":
            raise ValueError(f"MixedGenerator: needs layer='spade' and a clade_from block number, got "
                             f"layer={config.layer!r}, clade_from={config.clade_from!r}")
        super().__init__(config)


class SEANGenerator(_Trunk):
    """The SEAN generator (Zhu et al. 2020): per-region style codes modulate the SPADE trunk.

    ``Zencoder`` (:class:`~semnorm.models.encoders.Zencoder`) turns the style image into the style
    matrix ST (N, L, style_dim) by region-wise average pooling; every SEAN layer of ``head_0`` ..
    ``up_2`` (``ace_0`` / ``ace_1`` / ``ace_s``) blends a style branch (its own per-class linear maps
    of ST, broadcast to the regions, 3x3 convs) with a SPADE mask branch; ``up_3`` is mask-only, as
    published. The start is the label convolution ``fc`` as in SPADE. Published keys include
    ``Zencoder.model.{1,4,7,10,14}.*``, ``fc.*``, ``head_0.ace_0.fc_mu{j}.*``, ``up_3.ace_0.Spade.*``.

    Editing: :meth:`encode_style` gives ST of an image; change rows (per-region style transfer,
    interpolation, crossover) and pass it as ``style`` to :meth:`forward` (or :meth:`generate`).

    Published behaviour kept: the noise is drawn in training and eval alike (``sean_noise``), the
    param-free norm of the published code is synchronized batch norm. 'most' is refused: the published
    SEAN forward skips its ``up_4`` block and cannot run.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        if config.layer != "sean" or config.clade_from is not None:
            raise ValueError(f"SEANGenerator: config.layer must be 'sean', got {config.layer!r}")
        if config.num_upsampling_layers == "most":
            raise ValueError("SEANGenerator: num_upsampling_layers='most' is not supported (the published SEAN "
                             "forward skips up_4); use 'normal' or 'more'")
        self.config = c = config
        self.impl = c.impl
        self.Zencoder = Zencoder(3, c.style_dim, c.style_ngf, impl=c.impl)
        self.fc = LabelConv2d(c.num_classes, 16 * c.ngf, 3, impl=c.impl)
        self._build_trunk(c, use_style={name: name != "up_3" for name in c.block_names})
        init_weights(self)

    def encode_style(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Style matrix ST (N, num_classes, style_dim) of ``image`` (N, 3, H, W) under ``labels``
        ((N, H, W) integer or one-hot); rows of classes absent from a sample are zero."""
        labels, _ = self.prepare_labels(labels)
        self._check_batch(labels, image.shape[0], "image")
        return self.Zencoder(image, labels, self.config.num_classes)

    def forward(self, labels: torch.Tensor, image: torch.Tensor | None = None,
                style: torch.Tensor | None = None) -> torch.Tensor:
        """Synthesize from labels with the style of ``image`` or given style codes.

        Args:
            labels: (N, H, W) integer labels in [0, num_classes) or one-hot (N, num_classes, H, W).
            image: (N, 3, H, W) style image (encoded with ``Zencoder`` under ``labels``).
            style: (N, num_classes, style_dim) style codes ST instead of ``image`` (editing).

        Returns:
            (N, 3, H, W) image in [-1, 1].
        """
        labels, _ = self.prepare_labels(labels)
        if (image is None) == (style is None):
            raise ValueError("SEANGenerator: pass exactly one of image (N, 3, H, W) or style (N, L, style_dim)")
        if style is None:
            self._check_batch(labels, image.shape[0], "image")
            style = self.Zencoder(image, labels, self.config.num_classes)
        else:
            c = self.config
            if style.dim() != 3 or style.shape[1:] != (c.num_classes, c.style_dim):
                raise ValueError(f"SEANGenerator: style must have shape (N, {c.num_classes}, {c.style_dim}), "
                                 f"got {tuple(style.shape)}")
            self._check_batch(labels, style.shape[0], "style")
        x = self.fc(labels, None, size=self.config.latent_size)
        return self._run_trunk(x, labels, None, style=style)

    def generate(self, labels: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Synthesize from labels and (edited) style codes ST (N, num_classes, style_dim)."""
        return self.forward(labels, style=style)
