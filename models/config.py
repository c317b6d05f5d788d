"""Dataclass configurations of the SPADE-family generators and the papers' dataset presets.

One :class:`GeneratorConfig` describes every generator built on the SPADE trunk (SPADE, CLADE,
CLADE-ICPE, mixed SPADE/CLADE, SEAN): label layout, output size, channel width, upsampling schedule,
the normalization layer of each residual block, and the VAE / style-encoder options. The presets
(:data:`PRESETS`) hold the published values; :func:`preset_config` builds a config from a preset name
and keyword overrides named like the fields (unknown names raise a ``TypeError`` listing the valid
ones). No option strings are parsed anywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from semnorm.nn.norm import NORMS

__all__ = [
    "GeneratorConfig", "PRESETS", "LAYERS", "UPSAMPLING", "BLOCK_NAMES", "preset_config", "config_field_names",
    "check_overrides",
]

#: normalization layer kinds of a residual block
LAYERS = ("spade", "clade", "clade_icpe", "sean")
#: published ``--num_upsampling_layers`` values and the number of x2 upsamplings each means
UPSAMPLING = {"normal": 5, "more": 6, "most": 7}
#: the residual blocks of the trunk in order (up_4 only with 'most'); numbered 1.. in CLADE Table 6
BLOCK_NAMES = ("head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3", "up_4")


@dataclass
class GeneratorConfig:
    """Configuration of a SPADE-trunk generator (published option in brackets).

    Label layout: the norm layers index ``num_classes = label_nc + contain_dontcare`` classes; the
    published one-hot input has ``semantic_nc = num_classes + instance`` channels.

    Attributes:
        label_nc: classes of the dataset without the don't-care label [``--label_nc``].
        contain_dontcare: the dataset has a don't-care ("unknown") label, stored as class ``label_nc``
            [``--contain_dontcare_label``].
        instance: use the instance-edge map as an extra input channel [not ``--no_instance``].
        crop_size: output width in pixels [``--crop_size``].
        aspect_ratio: width / height of the output [``--aspect_ratio``]; height = ``round(sw / ratio) * 2^n``.
        ngf: base channel width; the trunk runs 16, 16, 16, 8, 4, 2, 1 (x ngf) [``--ngf``].
        num_upsampling_layers: "normal" (5 x2 upsamplings), "more" (6: one more between the middle
            blocks) or "most" (7: one more plus the block ``up_4``) [``--num_upsampling_layers``].
        norm: parameter-free norm inside every norm layer: "batch", "instance" or "syncbatch"
            (published default ``spectralspadesyncbatch3x3``: "syncbatch", equal to "batch" on one process).
        layer: normalization layer of every residual block: "spade", "clade", "clade_icpe" or "sean".
        clade_from: mixed SPADE/CLADE (CLADE paper Table 6): residual blocks numbered 1.. from the lowest
            resolution (head_0 = 1, ..., up_3 = 7) use CLADE from this block on and SPADE before it
            (``clade_from=6`` is the paper's S(1-5)+C(6-7)); None: ``layer`` everywhere. Needs
            ``layer="spade"``.
        spectral: spectral norm on the residual convolutions conv_0 / conv_1 / conv_s [``spectral`` in
            ``--norm_G``].
        use_vae: start from ``Linear(z_dim -> 16 ngf * sh * sw)`` on a latent code (multimodal
            synthesis, with the VAE image encoder) instead of a 3x3 conv on the resized label map
            [``--use_vae``].
        z_dim: latent size of the VAE [``--z_dim``].
        vae_input_size: the VAE encoder resizes images to this square size (published: 256, six
            stride-2 layers down to 4 x 4).
        style_dim: SEAN style-code length (published 512).
        style_ngf: base width of SEAN's style encoder Zencoder (published 32).
        sean_noise: SEAN's per-pixel noise input (published: on).
        kernel_size: kernel of the SPADE modulation convolutions (published 3).
        hidden: hidden channels of the SPADE modulation network (published 128).
        icpe_ignore_label: CLADE-ICPE: label whose pixels get no positional encoding (published
            preprocessing skips label 0); None: every label.
        spade_fast: SPADE layers' exact fast path: "auto", "always" or "never".
        impl: semnorm implementation of every op: "native", "reference" or None (automatic).
    """

    label_nc: int = 150
    contain_dontcare: bool = True
    instance: bool = False
    crop_size: int = 256
    aspect_ratio: float = 1.0
    ngf: int = 64
    num_upsampling_layers: str = "normal"
    norm: str = "syncbatch"
    layer: str = "spade"
    clade_from: int | None = None
    spectral: bool = True
    use_vae: bool = False
    z_dim: int = 256
    vae_input_size: int = 256
    style_dim: int = 512
    style_ngf: int = 32
    sean_noise: bool = True
    kernel_size: int = 3
    hidden: int = 128
    icpe_ignore_label: int | None = 0
    spade_fast: str = "auto"
    impl: str | None = None
    #: free-form note (which paper figure the preset reproduces); not used by the networks
    note: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GeneratorConfig.{name} must be a positive int, got {value!r}")

        for name in ("label_nc", "crop_size", "ngf", "z_dim", "vae_input_size", "style_dim", "style_ngf",
                     "kernel_size", "hidden"):
            positive_int(name)
        if self.num_upsampling_layers not in UPSAMPLING:
            raise ValueError(f"GeneratorConfig.num_upsampling_layers must be one of {tuple(UPSAMPLING)}, "
                             f"got {self.num_upsampling_layers!r}")
        if self.norm not in NORMS:
            raise ValueError(f"GeneratorConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if self.layer not in LAYERS:
            raise ValueError(f"GeneratorConfig.layer must be one of {LAYERS}, got {self.layer!r}")
        if self.spade_fast not in ("auto", "always", "never"):
            raise ValueError(f"GeneratorConfig.spade_fast must be 'auto', 'always' or 'never', got {self.spade_fast!r}")
        if self.impl not in (None, "native", "reference"):
            raise ValueError(f"GeneratorConfig.impl must be None, 'native' or 'reference', got {self.impl!r}")
        if not (isinstance(self.aspect_ratio, (int, float)) and self.aspect_ratio > 0):
            raise ValueError(f"GeneratorConfig.aspect_ratio must be a positive number, got {self.aspect_ratio!r}")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"GeneratorConfig.kernel_size must be odd, got {self.kernel_size}")
        if self.crop_size % (2 ** self.num_up) != 0:
            raise ValueError(f"GeneratorConfig.crop_size must be a multiple of 2^{self.num_up} = {2 ** self.num_up} "
                             f"for num_upsampling_layers={self.num_upsampling_layers!r}, got {self.crop_size}")
        if self.latent_size[0] < 1:
            raise ValueError(f"GeneratorConfig: crop_size {self.crop_size} with aspect_ratio {self.aspect_ratio} "
                             f"gives a start height of 0; raise crop_size or lower aspect_ratio")
        if self.clade_from is not None:
            n = len(self.block_names)
            if isinstance(self.clade_from, bool) or not isinstance(self.clade_from, int) \
                    or not 1 <= self.clade_from <= n + 1:
                raise ValueError(f"GeneratorConfig.clade_from must be a block number in [1, {n + 1}] "
                                 f"(1 = head_0, {n} = {self.block_names[-1]}, {n + 1} = no CLADE), "
                                 f"got {self.clade_from!r}")
            if self.layer != "spade":
                raise ValueError(f"GeneratorConfig.clade_from mixes SPADE and CLADE and needs layer='spade', "
                                 f"got layer={self.layer!r}")
        if self.layer == "sean" and self.instance:
            raise ValueError("GeneratorConfig: the SEAN generator has no instance-edge input; set instance=False")
        if self.layer == "sean" and self.use_vae:
            raise ValueError("GeneratorConfig: the SEAN generator takes style codes, not a VAE; set use_vae=False")
        if self.vae_input_size & (self.vae_input_size - 1) or self.vae_input_size < 8:
            raise ValueError(f"GeneratorConfig.vae_input_size must be a power of two >= 8, got {self.vae_input_size}")

    # ------------------------------------------------------------------------------------------
    # derived values

    @property
    def num_classes(self) -> int:
        """Classes the norm layers index: ``label_nc + contain_dontcare``."""
        return self.label_nc + int(self.contain_dontcare)

    @property
    def semantic_nc(self) -> int:
        """Channels of the published one-hot input: ``num_classes + instance``."""
        return self.num_classes + int(self.instance)

    @property
    def num_up(self) -> int:
        """Number of x2 upsamplings (5, 6 or 7)."""
        return UPSAMPLING[self.num_upsampling_layers]

    @property
    def latent_size(self) -> tuple[int, int]:
        """``(sh, sw)``: the start resolution, as the published ``compute_latent_vector_size``."""
        sw = self.crop_size // (2 ** self.num_up)
        return round(sw / self.aspect_ratio), sw

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the generated image."""
        sh, sw = self.latent_size
        return sh * 2 ** self.num_up, sw * 2 ** self.num_up

    @property
    def block_names(self) -> tuple[str, ...]:
        """Residual blocks in forward order (``up_4`` only with 'most')."""
        return BLOCK_NAMES if self.num_upsampling_layers == "most" else BLOCK_NAMES[:-1]

    def block_channels(self) -> list[tuple[str, int, int]]:
        """``(name, fin, fout)`` of every residual block."""
        nf = self.ngf
        chans = [16, 16, 16, 16, 8, 4, 2, 1]
        out = [(name, chans[i] * nf, chans[i + 1] * nf) for i, name in enumerate(BLOCK_NAMES[:-1])]
        if self.num_upsampling_layers == "most":
            out.append(("up_4", nf, nf // 2))
        return out

    def block_layers(self) -> dict[str, str]:
        """Normalization layer kind of every residual block (mixed SPADE/CLADE with ``clade_from``)."""
        if self.clade_from is None:
            return {name: self.layer for name in self.block_names}
        return {name: ("clade" if i + 1 >= self.clade_from else "spade") for i, name in enumerate(self.block_names)}

    def block_upsampled(self) -> dict[str, bool]:
        """Whether the activation is upsampled x2 right before each residual block."""
        ups = {name: name.startswith("up_") for name in self.block_names}
        ups["G_middle_0"] = True
        ups["G_middle_1"] = self.num_upsampling_layers in ("more", "most")
        return ups

    def block_sizes(self) -> dict[str, tuple[int, int]]:
        """(H, W) of the activation every residual block runs at."""
        h, w = self.latent_size
        out = {}
        for name, up in self.block_upsampled().items():
            if up:
                h, w = 2 * h, 2 * w
            out[name] = (h, w)
        return out

    def replace(self, **overrides: Any) -> "GeneratorConfig":
        """A copy with fields replaced (unknown names raise TypeError listing the valid ones)."""
        check_overrides(overrides)
        return dataclasses.replace(self, **overrides)


def config_field_names() -> tuple[str, ...]:
    """Names of the :class:`GeneratorConfig` fields (valid override names)."""
    return tuple(f.name for f in fields(GeneratorConfig))


def check_overrides(overrides: dict[str, Any], extra: tuple[str, ...] = ()) -> None:
    """Raise a TypeError naming any key of ``overrides`` that is not a config field (or in ``extra``)."""
    valid = config_field_names() + tuple(extra)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise TypeError(f"unknown generator option(s) {unknown}; valid names: {', '.join(valid)}")


#: published dataset configurations (SPADE / CLADE / SEAN options; COMPAT.md), and a tiny custom one
PRESETS: dict[str, dict[str, Any]] = {
    "ade20k": dict(label_nc=150, contain_dontcare=True, instance=False, crop_size=256, aspect_ratio=1.0,
                   num_upsampling_layers="normal",
                   note="ADE20K: 150 classes + don't-care = 151, 256x256, 'normal' (CLADE Table 1)"),
    "coco_stuff": dict(label_nc=182, contain_dontcare=True, instance=True, crop_size=256, aspect_ratio=1.0,
                       num_upsampling_layers="normal",
                       note="COCO-Stuff: 182 classes + don't-care + instance edges = 184 channels, 256x256"),
    "cityscapes": dict(label_nc=35, contain_dontcare=False, instance=True, crop_size=512, aspect_ratio=2.0,
                       num_upsampling_layers="more",
                       note="Cityscapes: 35 classes + instance edges = 36 channels, 512x256, 'more'"),
    "celebamask_hq": dict(label_nc=19, contain_dontcare=False, instance=False, crop_size=256, aspect_ratio=1.0,
                          num_upsampling_layers="normal",
                          note="CelebAMask-HQ: 19 classes, 256x256 (SEAN)"),
    "custom": dict(label_nc=6, contain_dontcare=True, instance=False, crop_size=64, aspect_ratio=1.0,
                   num_upsampling_layers="normal", ngf=8, hidden=16, z_dim=16, vae_input_size=32, style_dim=16,
                   style_ngf=4, norm="batch",
                   note="tiny: 6 classes + don't-care, 64x64, ngf 8 (tests, quick experiments)"),
}


def preset_config(preset: str | GeneratorConfig, **overrides: Any) -> GeneratorConfig:
    """The :class:`GeneratorConfig` of a preset name (see :data:`PRESETS`) with field overrides.

    ``preset`` may also be a ready config (the overrides are applied to a copy).
    """
    check_overrides(overrides)
    if isinstance(preset, GeneratorConfig):
        return dataclasses.replace(preset, **overrides)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    return GeneratorConfig(**{**PRESETS[preset], **overrides})
