"""Discriminators of the SPADE family: multi-scale PatchGAN (SPADE's and SEAN's variants) and SC-GAN's
feature-pyramid semantics-embedding discriminator (FPSE, from CC-FPSE).

Parameter names are those of the published code (COMPAT.md), so published ``<epoch>_net_D.pth``
checkpoints load with ``load_state_dict(strict=True)`` (see :func:`semnorm.models.checkpoint.load_published`):

- PatchGAN: ``discriminator_{i}.model0.0.{weight,bias}`` (plain conv), ``.model{1..n-1}.0.0.{weight_orig,
  weight_u,weight_v}`` (spectral conv without bias, then a parameter-free InstanceNorm),
  ``.model{n}.0.{weight,bias}`` (the final 1-channel conv).
- FPSE: ``enc{1..5}.0.0.*``, ``lat{2..5}.0.0.*``, ``final{2,3,4}.0.0.*`` (spectral conv, no bias,
  InstanceNorm), ``tf.*``, ``seg.*``, ``embedding.*`` (plain 1x1 convs with bias).

The published discriminators take the one-hot semantic map concatenated with the image; here they take
the image and INTEGER labels (N, H, W) and build the one-hot map (plus the instance-edge channel where
the dataset uses one) internally with :func:`semantic_onehot`; a float one-hot map (N, L [+1], H, W) is
accepted too, unchanged, for drop-in use with published data loaders.

This module also holds two helpers shared by the other model files: :func:`semantic_onehot` and
:func:`semnorm.models.blocks.init_weights` (the published xavier init).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from semnorm.nn._inputs import instance_edges

from .blocks import init_weights

__all__ = [
    "semantic_onehot",
    "PatchGANConfig",
    "FPSEConfig",
    "NLayerDiscriminator",
    "MultiscaleDiscriminator",
    "FPSEDiscriminator",
    "DISCRIMINATOR_PRESETS",
    "build_discriminator",
]


# ----------------------------------------------------------------------------------------------
# shared helpers


def semantic_onehot(
    labels: torch.Tensor,
    label_nc: int,
    edge: bool = False,
    edge_map: torch.Tensor | None = None,
    instance: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    where: str = "semantic_onehot",
) -> torch.Tensor:
    """The published network input: one-hot labels (+ instance-edge channel), (N, label_nc [+1], H, W).

    Args:
        labels: integer (N, H, W) class map with values in [0, label_nc), or an already built float
            one-hot map (N, label_nc [+1 when edge], H, W), returned as is (cast to ``dtype``; its edge
            channel replaced by ``edge_map`` when one is given).
        label_nc: number of classes L, a don't-care class included where the dataset has one.
        edge: whether the input has the extra instance-edge channel (COCO-Stuff, Cityscapes).
        edge_map: (N, 1, H, W) edge map (1 on instance boundaries), used when ``edge``.
        instance: (N, H, W) or (N, 1, H, W) instance ids, turned into the edge map with
            :func:`semnorm.nn._inputs.instance_edges` when ``edge`` and no ``edge_map`` is given.
        dtype: floating dtype of the result.
        where: name used in error messages.

    Returns:
        (N, label_nc + int(edge), H, W) tensor of ``dtype`` on labels' device.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{where}: labels must be a tensor, got {type(labels).__name__}")
    want = label_nc + int(edge)
    if labels.dim() == 4 and labels.is_floating_point():
        if labels.shape[1] != want:
            raise ValueError(f"{where}: a one-hot labels tensor must have {want} channels (label_nc={label_nc}"
                             f"{' + 1 edge channel' if edge else ''}), got shape {tuple(labels.shape)}")
        out = labels.to(dtype)
        if edge and edge_map is not None:
            out = torch.cat([out[:, :label_nc], edge_map.to(dtype)], 1)
        return out
    if labels.dim() != 3 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{where}: labels must be an integer (N, H, W) map or a float one-hot (N, L, H, W) map, "
                         f"got dtype {labels.dtype} and shape {tuple(labels.shape)}")
    lab = labels.long()
    if lab.numel():
        lo, hi = torch.aminmax(lab)
        if int(lo) < 0 or int(hi) >= label_nc:
            raise IndexError(f"{where}: labels must lie in [0, {label_nc}), found {int(lo) if int(lo) < 0 else int(hi)}")
    onehot = F.one_hot(lab, label_nc).permute(0, 3, 1, 2).to(dtype)
    if not edge:
        return onehot
    if edge_map is None:
        if instance is None:
            raise ValueError(f"{where}: this network uses an instance-edge channel (edge=True): pass edge_map "
                             f"(N, 1, H, W), instance (N, H, W), or a float one-hot labels tensor with the edge channel")
        edge_map = instance_edges(instance)
    if edge_map.dim() != 4 or edge_map.shape[1] != 1 or edge_map.shape[-2:] != lab.shape[-2:]:
        raise ValueError(f"{where}: edge_map must have shape (N, 1, {lab.shape[1]}, {lab.shape[2]}), "
                         f"got {tuple(edge_map.shape)}")
    return torch.cat([onehot, edge_map.to(device=onehot.device, dtype=dtype)], 1)



def _check_overrides(cls: type, overrides: dict, where: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    bad = sorted(set(overrides) - set(names))
    if bad:
        raise TypeError(f"{where}: unknown option(s) {bad}; valid names: {names}")


def _spectral_in(conv: nn.Conv2d, spectral: bool, norm: str) -> nn.Module:
    """SPADE's ``get_nonspade_norm_layer(opt, 'spectral<norm>')``: Sequential(spectral conv (no bias), norm)."""
    if spectral:
        conv = nn.utils.spectral_norm(conv)
    if norm == "none":
        return conv
    if conv.bias is not None:
        raise AssertionError("internal: the normed conv must be built without bias")
    if norm == "instance":
        layer = nn.InstanceNorm2d(conv.out_channels, affine=False)
    elif norm == "batch":
        layer = nn.BatchNorm2d(conv.out_channels, affine=True)
    else:
        raise ValueError(f"semnorm.models: discriminator norm must be 'instance', 'batch' or 'none', got {norm!r}")
    return nn.Sequential(conv, layer)


# ----------------------------------------------------------------------------------------------
# multi-scale PatchGAN


@dataclass
class PatchGANConfig:
    """Multi-scale PatchGAN discriminator (SPADE's ``MultiscaleDiscriminator`` of ``NLayerDiscriminator``).

    Attributes:
        label_nc: classes L of the one-hot input (don't-care class included where the dataset has one).
        edge: the input has an instance-edge channel.
        image_nc: image channels.
        ndf: channels of the first layer (doubling per layer, capped at 512).
        n_layers: hidden layers per scale (``model0`` .. ``model{n_layers-1}``), then the final 1-channel conv.
        last_stride: stride of the last hidden layer (SPADE 1; SEAN 2: all hidden layers stride 2).
        num_D: number of scales (input average-pooled by 2 between them).
        norm: parameter-free norm after each spectral conv of layers 1.. ("instance" published).
        spectral: spectral norm on the hidden layers 1.. (published: yes).
        intermediate: return every layer's output per scale (for feature matching); else the predictions only.
    """

    label_nc: int = 151
    edge: bool = False
    image_nc: int = 3
    ndf: int = 64
    n_layers: int = 4
    last_stride: int = 1
    num_D: int = 2
    norm: str = "instance"
    spectral: bool = True
    intermediate: bool = True

    def __post_init__(self) -> None:
        for name in ("label_nc", "image_nc", "ndf", "n_layers", "num_D"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"PatchGANConfig: {name} must be a positive int, got {value!r}")
        if self.last_stride not in (1, 2):
            raise ValueError(f"PatchGANConfig: last_stride must be 1 or 2, got {self.last_stride!r}")

    @property
    def input_nc(self) -> int:
        return self.label_nc + int(self.edge) + self.image_nc


class NLayerDiscriminator(nn.Module):
    """One scale of the PatchGAN: kernel 4, padding 2, LeakyReLU(0.2); submodules ``model0`` .. ``model{n}``.

    ``model0`` = Conv(input_nc -> ndf, stride 2, bias) + LReLU; ``model{i}`` (1 <= i < n_layers) =
    [spectral Conv(no bias) + InstanceNorm] + LReLU with channels ``min(2 * prev, 512)``, stride 2 except
    the last hidden layer (``last_stride``); ``model{n_layers}`` = Conv(-> 1, stride 1, bias).
    """

    def __init__(self, cfg: PatchGANConfig) -> None:
        super().__init__()
        kw, padw = 4, 2  # published: padw = ceil((kw - 1) / 2)
        nf = cfg.ndf
        seq: list[list[nn.Module]] = [[nn.Conv2d(cfg.input_nc, nf, kw, stride=2, padding=padw), nn.LeakyReLU(0.2)]]
        for n in range(1, cfg.n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = cfg.last_stride if n == cfg.n_layers - 1 else 2
            conv = nn.Conv2d(nf_prev, nf, kw, stride=stride, padding=padw, bias=cfg.norm == "none")
            seq.append([_spectral_in(conv, cfg.spectral, cfg.norm), nn.LeakyReLU(0.2)])
        seq.append([nn.Conv2d(nf, 1, kw, stride=1, padding=padw)])
        for n, layers in enumerate(seq):
            self.add_module(f"model{n}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (N, input_nc, H, W) -> every submodule's output, the last being the patch prediction (N, 1, h, w)."""
        out = []
        for m in self.children():
            x = m(x)
            out.append(x)
        return out


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` PatchGANs (``discriminator_0``, ``discriminator_1``, ...) on the input and its 2x downsamples.

    Between scales the input is ``avg_pool2d(kernel 3, stride 2, padding 1, count_include_pad=False)``.
    Input: ``concat(one-hot labels (+ edge), image)`` along channels, labels first, as published.
    """

    def __init__(self, cfg: PatchGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        for i in range(cfg.num_D):
            self.add_module(f"discriminator_{i}", NLayerDiscriminator(cfg))
        init_weights(self)

    def discriminator_input(self, image: torch.Tensor, labels: torch.Tensor, edge: torch.Tensor | None = None,
                            instance: torch.Tensor | None = None) -> torch.Tensor:
        """``concat(one-hot(labels) [+ edge], image)``, (N, input_nc, H, W)."""
        if image.dim() != 4 or image.shape[1] != self.cfg.image_nc:
            raise ValueError(f"MultiscaleDiscriminator: image must have shape (N, {self.cfg.image_nc}, H, W), "
                             f"got {tuple(image.shape)}")
        seg = semantic_onehot(labels, self.cfg.label_nc, self.cfg.edge, edge, instance, dtype=image.dtype,
                              where="MultiscaleDiscriminator")
        if seg.shape[0] != image.shape[0] or seg.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"MultiscaleDiscriminator: labels {tuple(seg.shape)} must match the image's batch and "
                             f"size {tuple(image.shape)}")
        return torch.cat([seg, image], 1)

    def forward(self, image: torch.Tensor, labels: torch.Tensor, edge: torch.Tensor | None = None,
                instance: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
        """Per-scale outputs.

        Args:
            image: (N, image_nc, H, W).
            labels: (N, H, W) integer labels, or a float one-hot map (N, label_nc [+1], H, W).
            edge, instance: the instance-edge map (N, 1, H, W) or instance ids (N, H, W) (edge configs).

        Returns:
            A list over scales (finest first) of lists of tensors: every layer's output (intermediate
            features for feature matching, the last the patch prediction (N, 1, h, w)); with
            ``cfg.intermediate=False``, a one-element list per scale holding the prediction.
        """
        x = self.discriminator_input(image, labels, edge, instance)
        result = []
        for i, d in enumerate(self.children()):
            out = d(x)
            result.append(out if self.cfg.intermediate else [out[-1]])
            if i + 1 < self.cfg.num_D:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
        return result


# ----------------------------------------------------------------------------------------------
# SC-GAN's feature-pyramid semantics-embedding discriminator


@dataclass
class FPSEConfig:
    """Feature-pyramid semantics-embedding discriminator (CC-FPSE, used by SC-GAN).

    Attributes:
        label_nc: classes L of the label input (don't-care included where the dataset has one).
        edge: the label input has an instance-edge channel (the embedding conv then takes L + 1).
        image_nc: image channels.
        ndf: base channels (enc: ndf, 2, 4, 8, 8 x ndf; lateral 4 ndf; final 2 ndf).
        norm: parameter-free norm after each spectral conv ("instance" published, ``spectralinstance``).
        spectral: spectral norm on enc/lat/final convs.
    """

    label_nc: int = 151
    edge: bool = False
    image_nc: int = 3
    ndf: int = 64
    norm: str = "instance"
    spectral: bool = True

    def __post_init__(self) -> None:
        for name in ("label_nc", "image_nc", "ndf"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FPSEConfig: {name} must be a positive int, got {value!r}")


class FPSEDiscriminator(nn.Module):
    """Feature-pyramid semantics-embedding discriminator (CC-FPSE; SC-GAN section 3.3).

    Bottom-up: five 3x3 stride-2 convs (``enc1`` .. ``enc5``: ndf, 2, 4, 8, 8 x ndf). Top-down: 1x1
    laterals (``lat2`` .. ``lat5`` -> 4 ndf) summed with the bilinear x2 upsampled coarser level; 3x3
    ``final2/3/4`` (-> 2 ndf) at 1/4, 1/8, 1/16 of the input. Each level gives a patch score
    ``tf(f) + <seg(f), E_k>`` where ``E_k`` is the 1x1 ``embedding`` of the label map average-pooled
    to the level's size (the semantics-embedding term). All LeakyReLU(0.2).
    """

    def __init__(self, cfg: FPSEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        nf = cfg.ndf

        def block(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
            conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=cfg.norm == "none")
            return nn.Sequential(_spectral_in(conv, cfg.spectral, cfg.norm), nn.LeakyReLU(0.2))

        self.enc1 = block(cfg.image_nc, nf, 3, 2)
        self.enc2 = block(nf, nf * 2, 3, 2)
        self.enc3 = block(nf * 2, nf * 4, 3, 2)
        self.enc4 = block(nf * 4, nf * 8, 3, 2)
        self.enc5 = block(nf * 8, nf * 8, 3, 2)
        self.lat2 = block(nf * 2, nf * 4, 1)
        self.lat3 = block(nf * 4, nf * 4, 1)
        self.lat4 = block(nf * 8, nf * 4, 1)
        self.lat5 = block(nf * 8, nf * 4, 1)
        self.final2 = block(nf * 4, nf * 2, 3)
        self.final3 = block(nf * 4, nf * 2, 3)
        self.final4 = block(nf * 4, nf * 2, 3)
        self.tf = nn.Conv2d(nf * 2, 1, 1)
        self.seg = nn.Conv2d(nf * 2, nf * 2, 1)
        self.embedding = nn.Conv2d(cfg.label_nc + int(cfg.edge), nf * 2, 1)
        init_weights(self)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor, labels: torch.Tensor, edge: torch.Tensor | None = None,
                instance: torch.Tensor | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Features and patch scores.

        Args:
            image: (N, image_nc, H, W), H and W multiples of 32.
            labels: (N, H, W) integer labels or a float one-hot map (N, label_nc [+1], H, W).
            edge, instance: instance-edge map (N, 1, H, W) or instance ids (edge configs).

        Returns:
            ``(feats, preds)`` as published (``[feats, results]``): feats = the bottom-up features at 1/4,
            1/8, 1/16, 1/32 (for feature matching), preds = the scores (N, 1, H/4, W/4), (N, 1, H/8, W/8),
            (N, 1, H/16, W/16).
        """
        if image.dim() != 4 or image.shape[1] != self.cfg.image_nc:
            raise ValueError(f"FPSEDiscriminator: image must have shape (N, {self.cfg.image_nc}, H, W), "
                             f"got {tuple(image.shape)}")
        if image.shape[-2] % 32 or image.shape[-1] % 32:
            raise ValueError(f"FPSEDiscriminator: image height and width must be multiples of 32, got {tuple(image.shape)}")
        seg = semantic_onehot(labels, self.cfg.label_nc, self.cfg.edge, edge, instance, dtype=image.dtype,
                              where="FPSEDiscriminator")
        f11 = self.enc1(image)
        f12 = self.enc2(f11)
        f13 = self.enc3(f12)
        f14 = self.enc4(f13)
        f15 = self.enc5(f14)
        f25 = self.lat5(f15)
        f24 = self._up(f25) + self.lat4(f14)
        f23 = self._up(f24) + self.lat3(f13)
        f22 = self._up(f23) + self.lat2(f12)
        f32, f33, f34 = self.final2(f22), self.final3(f23), self.final4(f24)
        emb = F.avg_pool2d(self.embedding(seg), 2)
        emb2 = F.avg_pool2d(emb, 2)
        emb3 = F.avg_pool2d(emb2, 2)
        emb4 = F.avg_pool2d(emb3, 2)
        preds = [self.tf(f) + (self.seg(f) * e).sum(1, keepdim=True) for f, e in ((f32, emb2), (f33, emb3), (f34, emb4))]
        return [f12, f13, f14, f15], preds


# ----------------------------------------------------------------------------------------------
# presets and the builder

#: dataset label counts (don't-care class included) and instance-edge use, as in the published options
_DATASETS = {
    "ade20k": dict(label_nc=151, edge=False),
    "coco_stuff": dict(label_nc=183, edge=True),
    "cityscapes": dict(label_nc=35, edge=True),
    "celebamask_hq": dict(label_nc=19, edge=False),
    "custom": dict(label_nc=5, edge=False),
}

#: per discriminator family: the architecture options that differ from the dataclass defaults
_FAMILIES = {
    "spade": (PatchGANConfig, dict(n_layers=4, last_stride=1, num_D=2)),
    "sean": (PatchGANConfig, dict(n_layers=3, last_stride=2, num_D=2)),
    "scgan": (FPSEConfig, dict()),
}
_ALIASES = {"clade": "spade", "clade_icpe": "spade", "mixed": "spade"}
_TINY = {PatchGANConfig: dict(ndf=4), FPSEConfig: dict(ndf=4)}

DISCRIMINATOR_PRESETS = tuple(_DATASETS)


def build_discriminator(name: str, preset: str, **overrides) -> nn.Module:
    """The discriminator of a method at a dataset preset.

    Args:
        name: "spade", "sean", "scgan" (FPSE); "clade", "clade_icpe" and "mixed" use SPADE's.
        preset: "ade20k", "coco_stuff", "cityscapes", "celebamask_hq" or "custom" (tiny: 5 labels, ndf 4).
        **overrides: any field of the config dataclass (:class:`PatchGANConfig` or :class:`FPSEConfig`);
            an unknown name raises TypeError listing the valid ones.

    Returns:
        :class:`MultiscaleDiscriminator` or :class:`FPSEDiscriminator`, published init applied.
    """
    family = _ALIASES.get(name, name)
    if family not in _FAMILIES:
        raise ValueError(f"build_discriminator: name must be one of {sorted(_FAMILIES) + sorted(_ALIASES)}, got {name!r}")
    if preset not in _DATASETS:
        raise ValueError(f"build_discriminator: preset must be one of {list(_DATASETS)}, got {preset!r}")
    cls, arch = _FAMILIES[family]
    _check_overrides(cls, overrides, f"build_discriminator({name!r})")
    kwargs = {**_DATASETS[preset], **arch, **(_TINY[cls] if preset == "custom" else {}), **overrides}
    cfg = cls(**kwargs)
    return FPSEDiscriminator(cfg) if cls is FPSEConfig else MultiscaleDiscriminator(cfg)
