"""SC-GAN's generator (Wang et al., "Image Synthesis via Semantic Composition", ICCV 2021) on semnorm's layers.

Two parts (SC-GAN appendix A, COMPAT.md "SC-GAN"):

- the semantic vector generator (SVG, published attribute ``pyramid_spaital_routing`` (sic)): a progressive
  label decoder. Stage 1 is ``Conv3x3(S -> 16 nrf) + LReLU + Conv3x3`` on the label map at the start
  resolution; stage k >= 2 is ``LReLU + Conv3x3(prev + S -> c_k) + LReLU + Conv3x3`` on the nearest-x2
  upsampled previous output concatenated with the label map at that resolution (the label pyramid:
  bilinear /2 steps of the full-resolution one-hot map), c = 16, 8, 4, 2, 1, 1 (and 1 for 'more') x nrf.
  Each stage's output, average-pooled over groups of channels down to K (``adaptive_avg_pool`` over the
  channel axis), gives the router logits of one resolution, for the SCC convs (K_conv) and the SCN norms
  (K_norm). A ``toRGB`` head (Conv3x3 nrf -> nrf/2, LReLU, Conv3x3 -> 3, Hardtanh) on the last stage gives
  the auxiliary image f_V(S), trained with an L1 loss to the real image (:func:`semnorm.models.losses.
  semantic_vector_loss`).
- the semantic render generator: SPADE's trunk with ngf channels (head_0, G_middle_0/1, up_0..up_3) made
  of SCResBlks: ``conv_{0,1}`` = :class:`semnorm.nn.SCC` (K_conv spectral candidate 3x3 convs, no bias),
  ``norm_{0,1}`` = :class:`semnorm.nn.SCN` (bank (K_norm, 2C)), a learned shortcut (fin != fout) =
  :class:`semnorm.nn.SPADE` then a spectral Conv3x3 with bias; input ``fc`` = Conv3x3 on the nearest-
  resized one-hot map (or Linear(z) with ``use_vae``); output Conv3x3 -> 3 after LReLU(0.2) and Hardtanh.

Semantic vectors V = softmax over K of ``temperature * logits`` (:func:`semnorm.functional.
semantic_vectors`; t = 0.05 ADE20K / CelebAMask-HQ, 0.5 COCO-Stuff). Every semnorm layer receives
integer labels (SPADE shortcut norms) or the vectors at its own resolution.

Parameter and buffer names are the published ones (``pyramid_spaital_routing.labelDec{k}.{i}.weight_orig``,
``head_0.conv_0.conv_bases.{k}.weight_orig``, ``head_0.norm_0.affine_params_groups``,
``up_0.norm_s.mlp_shared.0.weight``, ``up_0.conv_s.weight_orig`` ...), so published checkpoints load with
``load_state_dict(strict=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from semnorm import functional as SF
from semnorm.nn import SCC, SCN, SPADE

from .blocks import init_weights
from .discriminators import _check_overrides, semantic_onehot

__all__ = [
    "SCGANConfig",
    "SCGAN_PRESETS",
    "SemanticVectorGenerator",
    "SCResnetBlock",
    "SCGANGenerator",
    "SCGANOutput",
    "build_scgan_generator",
]



@dataclass
class SCGANConfig:
    """SC-GAN generator configuration (published option names in parentheses).

    Attributes:
        label_nc: classes L (a don't-care class included where the dataset has one) (``label_nc`` + dontcare).
        edge: the semantic input has an instance-edge channel (``not no_instance``).
        crop_size: output width (``crop_size``).
        aspect_ratio: width / height (``aspect_ratio``).
        num_upsampling_layers: "normal" (5 ups, 6 SVG stages) or "more" (6 ups, 7 SVG stages).
        ngf: trunk channels: head 16 ngf ... up_3 ngf (``ngf``).
        nff: channels of the input conv / linear: 16 nff (``nff``).
        nrf: SVG channels: 16, 8, 4, 2, 1, 1 x nrf (``nrf``).
        num_experts_conv: K of the SCC convs (``num_experts_conv``).
        num_experts_norm: K of the SCN norms (``num_experts_norm``).
        temperature: factor on the router logits before the softmax (``temperature``).
        norm: parameter-free norm of the SCN and SPADE layers: "syncbatch" (published), "batch", "instance".
        spectral: spectral norm on the SCC candidate convs (``'spectral' in norm_G``); the shortcut conv
            ``conv_s`` is always spectral, as published.
        svg_spectral: spectral norm on the SVG decoder convs (``not no_spectral_on_routing``); never on toRGB.
        use_vae: input ``fc`` = Linear(z_dim -> 16 nff sh sw) on a latent z instead of Conv3x3 on the labels.
        z_dim: latent size with ``use_vae``.
        routing_detach: detach the SCC router logits from the SVG (``routing_detach``).
    """

    label_nc: int = 151
    edge: bool = False
    crop_size: int = 256
    aspect_ratio: float = 1.0
    num_upsampling_layers: str = "normal"
    ngf: int = 32
    nff: int = 32
    nrf: int = 32
    num_experts_conv: int = 3
    num_experts_norm: int = 4
    temperature: float = 0.05
    norm: str = "syncbatch"
    spectral: bool = True
    svg_spectral: bool = True
    use_vae: bool = False
    z_dim: int = 256
    routing_detach: bool = False

    def __post_init__(self) -> None:
        for name in ("label_nc", "crop_size", "ngf", "nff", "nrf", "num_experts_conv", "num_experts_norm", "z_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SCGANConfig: {name} must be a positive int, got {value!r}")
        if self.nrf < 2:
            raise ValueError(f"SCGANConfig: nrf must be >= 2 (toRGB has nrf // 2 channels), got {self.nrf}")
        if self.num_upsampling_layers not in ("normal", "more"):
            raise ValueError("SCGANConfig: num_upsampling_layers must be 'normal' or 'more' (the published SC-GAN "
                             f"generator has no working 'most'), got {self.num_upsampling_layers!r}")
        if self.norm not in ("batch", "instance", "syncbatch"):
            raise ValueError(f"SCGANConfig: norm must be 'batch', 'instance' or 'syncbatch', got {self.norm!r}")
        if not self.aspect_ratio > 0:
            raise ValueError(f"SCGANConfig: aspect_ratio must be positive, got {self.aspect_ratio!r}")
        sw, sh = self.latent_size
        if sw < 1 or sh < 1:
            raise ValueError(f"SCGANConfig: crop_size {self.crop_size} is too small for {self.num_upsampling_layers!r} "
                             f"upsampling (start size {sh}x{sw})")

    @property
    def semantic_nc(self) -> int:
        """Channels of the one-hot semantic input: label_nc (+1 edge)."""
        return self.label_nc + int(self.edge)

    @property
    def num_up(self) -> int:
        return 5 if self.num_upsampling_layers == "normal" else 6

    @property
    def num_stages(self) -> int:
        """SVG stages = resolutions of the label pyramid."""
        return self.num_up + 1

    @property
    def latent_size(self) -> tuple[int, int]:
        """(sw, sh): start width and height, as published (``crop // 2^n_up``, ``round(sw / aspect)``)."""
        sw = self.crop_size // (2 ** self.num_up)
        return sw, round(sw / self.aspect_ratio)

    @property
    def output_size(self) -> tuple[int, int]:
        """(H, W) of the generated image."""
        sw, sh = self.latent_size
        return sh * 2 ** self.num_up, sw * 2 ** self.num_up


#: presets at the papers' configurations; "custom" is a tiny network for tests and examples
SCGAN_PRESETS: dict[str, dict] = {
    # COMPAT: ngf 32, nff 32, nrf 32, K_conv 3, K_norm 4, t 0.05; 256x256, 151 labels (150 + dontcare)
    "ade20k": dict(label_nc=151, edge=False, crop_size=256),
    # 182 + dontcare, instance edges; t 0.5 (COMPAT)
    "coco_stuff": dict(label_nc=183, edge=True, crop_size=256, temperature=0.5),
    # 35 labels + instance edges, 512x256, 'more' upsampling like SPADE's Cityscapes config
    "cityscapes": dict(label_nc=35, edge=True, crop_size=512, aspect_ratio=2.0, num_upsampling_layers="more"),
    # 19 labels; the SC-GAN paper trains CelebAMask-HQ at 512x512; t 0.05
    "celebamask_hq": dict(label_nc=19, edge=False, crop_size=512),
    # tiny
    "custom": dict(label_nc=5, edge=False, crop_size=32, ngf=2, nff=2, nrf=2, norm="batch"),
}


def _conv3(cin: int, cout: int, spectral: bool) -> nn.Module:
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    return nn.utils.spectral_norm(conv) if spectral else conv


def _channel_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, k, H, W): adaptive average pooling over the channel axis (the published enc2weight)."""
    return F.adaptive_avg_pool3d(x.unsqueeze(1), (k, x.shape[2], x.shape[3])).squeeze(1)


class SemanticVectorGenerator(nn.Module):
    """SC-GAN's SVG: progressive label decoder over the label pyramid, router logits per stage, aux image.

    Submodules ``labelDec1`` .. ``labelDec{S}`` (S = 6 'normal', 7 'more') and ``toRGB``, as published.
    """

    def __init__(self, cfg: SCGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        nf, s_nc, sn = cfg.nrf, cfg.semantic_nc, cfg.svg_spectral
        mult = [16, 8, 4, 2, 1, 1, 1][: cfg.num_stages]
        self.labelDec1 = nn.Sequential(_conv3(s_nc, nf * 16, sn), nn.LeakyReLU(0.2), _conv3(nf * 16, nf * 16, sn))
        for k in range(1, cfg.num_stages):
            cin, cout = nf * mult[k - 1] + s_nc, nf * mult[k]
            self.add_module(f"labelDec{k + 1}", nn.Sequential(
                nn.LeakyReLU(0.2), _conv3(cin, cout, sn), nn.LeakyReLU(0.2), _conv3(cout, cout, sn)))
        self.toRGB = nn.Sequential(nn.Conv2d(nf, nf // 2, 3, padding=1), nn.LeakyReLU(0.2),
                                   nn.Conv2d(nf // 2, 3, 3, padding=1), nn.Hardtanh())

    def label_pyramid(self, seg: torch.Tensor) -> list[torch.Tensor]:
        """Coarsest first: the one-hot map (N, S, H, W) and its bilinear /2 steps, ``num_stages`` levels."""
        levels = [seg]
        for _ in range(self.cfg.num_stages - 1):
            levels.append(F.interpolate(levels[-1], scale_factor=0.5, mode="bilinear"))
        return levels[::-1]

    def forward(self, seg: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """seg (N, S, H, W) one-hot (+edge) at full resolution.

        Returns:
            ``(conv_logits, norm_logits, aux_image)``: per stage (coarsest first) the router logits
            (N, K_conv, h, w) and (N, K_norm, h, w), and the auxiliary image (N, 3, H, W) in [-1, 1].
        """
        pyr = self.label_pyramid(seg)
        conv_logits, norm_logits = [], []
        x = None
        for k, level in enumerate(pyr):
            dec = getattr(self, f"labelDec{k + 1}")
            x = dec(level) if k == 0 else dec(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), level], 1))
            conv_logits.append(_channel_pool(x, self.cfg.num_experts_conv))
            norm_logits.append(_channel_pool(x, self.cfg.num_experts_norm))
        return conv_logits, norm_logits, self.toRGB(x)


class SCResnetBlock(nn.Module):
    """SCResBlk: ``out = shortcut + conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x, Vn)), Vc), Vn)), Vc)``.

    ``conv_{0,1}``: :class:`semnorm.nn.SCC` (fin -> fmiddle -> fout, fmiddle = min(fin, fout)); ``norm_{0,1}``:
    :class:`semnorm.nn.SCN`; learned shortcut iff fin != fout: ``conv_s(norm_s(x, labels))`` with
    ``norm_s`` = :class:`semnorm.nn.SPADE` and ``conv_s`` = spectral Conv3x3 with bias.
    """

    def __init__(self, fin: int, fout: int, cfg: SCGANConfig) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = SCC(fin, fmiddle, cfg.num_experts_conv, spectral=cfg.spectral)
        self.conv_1 = SCC(fmiddle, fout, cfg.num_experts_conv, spectral=cfg.spectral)
        if self.learned_shortcut:
            self.conv_s = nn.utils.spectral_norm(nn.Conv2d(fin, fout, 3, padding=1))
            self.norm_s = SPADE(fin, cfg.label_nc, norm=cfg.norm, edge=cfg.edge)
        self.norm_0 = SCN(fin, cfg.num_experts_norm, norm=cfg.norm)
        self.norm_1 = SCN(fmiddle, cfg.num_experts_norm, norm=cfg.norm)

    def forward(self, x: torch.Tensor, vectors: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor,
                edge: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, fin, h, w); vectors = (V_conv (N, K_conv, h, w), V_norm (N, K_norm, h, w)); labels (N, H, W)
        integer at any resolution; edge (N, 1, H, W) for edge configs. Returns (N, fout, h, w)."""
        v_conv, v_norm = vectors
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, v_norm), 0.2), v_conv)
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, v_norm), 0.2), v_conv)
        x_s = self.conv_s(self.norm_s(x, labels, edge)) if self.learned_shortcut else x
        return x_s + dx


class SCGANOutput(NamedTuple):
    """What :meth:`SCGANGenerator.forward` returns with ``return_aux=True``."""

    image: torch.Tensor  #: (N, 3, H, W) in [-1, 1]
    aux_image: torch.Tensor  #: (N, 3, H, W) the SVG's auxiliary image f_V(S), in [-1, 1]
    conv_vectors: list[torch.Tensor]  #: per resolution, coarsest first, the SCC semantic vectors (N, K_conv, h, w)
    norm_vectors: list[torch.Tensor]  #: per resolution, the SCN semantic vectors (N, K_norm, h, w)


class SCGANGenerator(nn.Module):
    """SC-GAN generator: SVG (``pyramid_spaital_routing``) + semantic render generator of SCResBlks.

    Trunk (ngf 32 published): head_0 16 nff -> 16 ngf, up, G_middle_0, [up for 'more'], G_middle_1, up,
    up_0 -> 8 ngf, up, up_1 -> 4 ngf, up, up_2 -> 2 ngf, up, up_3 -> ngf; conv_img -> 3; hardtanh.
    Every block uses the semantic vectors of its resolution (G_middle_0 and G_middle_1 share stage 2's in
    'normal' mode, as published).
    """

    def __init__(self, cfg: SCGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        nf = cfg.ngf
        self.sw, self.sh = cfg.latent_size
        if cfg.use_vae:
            self.fc = nn.Linear(cfg.z_dim, 16 * cfg.nff * self.sw * self.sh)
        else:
            self.fc = nn.Conv2d(cfg.semantic_nc, 16 * cfg.nff, 3, padding=1)
        self.pyramid_spaital_routing = SemanticVectorGenerator(cfg)
        self.head_0 = SCResnetBlock(16 * cfg.nff, 16 * nf, cfg)
        self.G_middle_0 = SCResnetBlock(16 * nf, 16 * nf, cfg)
        self.G_middle_1 = SCResnetBlock(16 * nf, 16 * nf, cfg)
        self.up_0 = SCResnetBlock(16 * nf, 8 * nf, cfg)
        self.up_1 = SCResnetBlock(8 * nf, 4 * nf, cfg)
        self.up_2 = SCResnetBlock(4 * nf, 2 * nf, cfg)
        self.up_3 = SCResnetBlock(2 * nf, nf, cfg)
        self.conv_img = nn.Conv2d(nf, 3, 3, padding=1)
        init_weights(self)

    def _inputs(self, labels: torch.Tensor, edge: torch.Tensor | None, instance: torch.Tensor | None,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(one-hot seg (N, S, H, W), integer labels (N, H, W), edge map or None)."""
        cfg = self.cfg
        seg = semantic_onehot(labels, cfg.label_nc, cfg.edge, edge, instance, dtype=dtype, where="SCGANGenerator")
        want = cfg.output_size
        if tuple(seg.shape[-2:]) != want:
            raise ValueError(f"SCGANGenerator: the label map must be {want[0]}x{want[1]} (the output size of this "
                             f"config), got {tuple(seg.shape[-2:])}")
        if labels.is_floating_point():
            labels = labels[:, : cfg.label_nc].argmax(1)
        edge_map = seg[:, cfg.label_nc:] if cfg.edge else None
        return seg, labels, edge_map

    def forward(self, labels: torch.Tensor, edge: torch.Tensor | None = None, instance: torch.Tensor | None = None,
                z: torch.Tensor | None = None, return_aux: bool = False) -> torch.Tensor | SCGANOutput:
        """Generate images.

        Args:
            labels: (N, H, W) integer labels in [0, label_nc), or the published float one-hot map
                (N, label_nc [+1 edge], H, W); H, W = ``cfg.output_size``.
            edge: (N, 1, H, W) instance-edge map (edge configs), or ``instance`` (N, H, W) ids to derive it.
            z: (N, z_dim) latent with ``use_vae`` (default: standard normal).
            return_aux: also return the SVG's auxiliary image and the semantic vectors.

        Returns:
            (N, 3, H, W) image in [-1, 1], or :class:`SCGANOutput` with ``return_aux=True``.
        """
        cfg = self.cfg
        dtype = self.conv_img.weight.dtype
        seg, lab, edge_map = self._inputs(labels, edge, instance, dtype)
        n = seg.shape[0]
        if cfg.use_vae:
            if z is None:
                z = torch.randn(n, cfg.z_dim, dtype=dtype, device=seg.device)
            x = self.fc(z).view(n, 16 * cfg.nff, self.sh, self.sw)
        else:
            x = self.fc(F.interpolate(seg, size=(self.sh, self.sw), mode="nearest"))

        conv_logits, norm_logits, aux = self.pyramid_spaital_routing(seg)
        if cfg.routing_detach:
            conv_logits = [c.detach() for c in conv_logits]
        t = cfg.temperature
        v_conv = [SF.semantic_vectors(c, t) for c in conv_logits]
        v_norm = [SF.semantic_vectors(c, t) for c in norm_logits]
        more = int(cfg.num_upsampling_layers == "more")

        def vec(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return v_conv[i], v_norm[i]

        up = lambda t_: F.interpolate(t_, scale_factor=2.0, mode="nearest")  # noqa: E731
        x = self.head_0(x, vec(0), lab, edge_map)
        x = self.G_middle_0(up(x), vec(1), lab, edge_map)
        if more:
            x = up(x)
        x = self.G_middle_1(x, vec(1 + more), lab, edge_map)
        x = self.up_0(up(x), vec(2 + more), lab, edge_map)
        x = self.up_1(up(x), vec(3 + more), lab, edge_map)
        x = self.up_2(up(x), vec(4 + more), lab, edge_map)
        x = self.up_3(up(x), vec(5 + more), lab, edge_map)
        image = F.hardtanh(self.conv_img(F.leaky_relu(x, 0.2)))
        if return_aux:
            return SCGANOutput(image, aux, v_conv, v_norm)
        return image


def build_scgan_generator(preset: str, **overrides) -> SCGANGenerator:
    """The SC-GAN generator at a preset ("ade20k", "coco_stuff", "cityscapes", "celebamask_hq", "custom").

    ``overrides`` are fields of :class:`SCGANConfig`; an unknown name raises TypeError listing the valid ones.
    """
    if preset not in SCGAN_PRESETS:
        raise ValueError(f"build_scgan_generator: preset must be one of {list(SCGAN_PRESETS)}, got {preset!r}")
    _check_overrides(SCGANConfig, overrides, "build_scgan_generator")
    return SCGANGenerator(SCGANConfig(**{**SCGAN_PRESETS[preset], **overrides}))

