"""Image encoders of the SPADE family: SPADE's VAE encoder and SEAN's per-region style encoder.

Both keep the published module layouts and parameter names (COMPAT.md), so published checkpoints load
with ``load_state_dict(strict=True)``: :class:`ConvEncoder` (SPADE's ``netE``: ``layer1`` ..
``layer6``, each ``Sequential(spectral conv without bias, InstanceNorm)``, then ``fc_mu`` /
``fc_var``) and :class:`Zencoder` (SEAN's, inside its generator: ``Zencoder.model.{1,4,7,10,14}``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF
from torch import nn

from semnorm.nn import region_style_codes

__all__ = ["ConvEncoder", "Zencoder", "reparameterize"]


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``z = mu + eps * exp(logvar / 2)`` with ``eps ~ N(0, I)`` (the VAE reparameterization trick)."""
    eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
    return mu + eps * torch.exp(0.5 * logvar)


class ConvEncoder(nn.Module):
    """SPADE's VAE image encoder: image -> (mu, logvar), each (N, z_dim).

    The image is resized (bilinear) to ``input_size`` x ``input_size`` (published: 256), then
    ``log2(input_size / 4)`` 3x3 stride-2 convolutions (spectral norm, no bias) with InstanceNorm
    and LeakyReLU(0.2) bring it to 4 x 4 with channels ``ngf * (1, 2, 4, 8, 8, 8, ...)``; two linear
    heads ``fc_mu`` and ``fc_var`` (``ngf * 8 * 4 * 4 -> z_dim``) give the mean and log-variance.

    Published keys: ``layer{i}.0.weight_orig`` / ``.weight_u`` / ``.weight_v`` (i = 1..6 at 256),
    ``fc_mu.{weight,bias}``, ``fc_var.{weight,bias}``. The published code drops ``layer6`` when
    ``crop_size < 256`` but still resizes to 256, which leaves ``fc_mu`` the wrong input size; here the
    number of layers follows ``input_size`` instead.

    Args:
        ngf: base width (published: the generator's ngf, 64).
        z_dim: latent size (published 256).
        input_size: square size the image is resized to (a power of two >= 8).
        spectral: spectral norm on the convolutions (published ``norm_E='spectralinstance'``).
    """

    def __init__(self, ngf: int = 64, z_dim: int = 256, input_size: int = 256, spectral: bool = True) -> None:
        super().__init__()
        if input_size < 8 or input_size & (input_size - 1):
            raise ValueError(f"ConvEncoder: input_size must be a power of two >= 8, got {input_size}")
        self.ngf, self.z_dim, self.input_size = ngf, z_dim, input_size
        self.num_layers = int(round(math.log2(input_size // 4)))
        cin = 3
        for i in range(self.num_layers):
            cout = ngf * min(2 ** i, 8)
            conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
            if spectral:
                conv = nn.utils.spectral_norm(conv)
            setattr(self, f"layer{i + 1}", nn.Sequential(conv, nn.InstanceNorm2d(cout, affine=False)))
            cin = cout
        self.fc_mu = nn.Linear(cin * 4 * 4, z_dim)
        self.fc_var = nn.Linear(cin * 4 * 4, z_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image (N, 3, H, W) in [-1, 1] -> (mu, logvar), each (N, z_dim)."""
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"ConvEncoder: image must have shape (N, 3, H, W), got {tuple(getattr(image, 'shape', ()))}")
        x = image
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = TF.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        for i in range(self.num_layers):
            if i > 0:
                x = TF.leaky_relu(x, 0.2)
            x = getattr(self, f"layer{i + 1}")(x)
        x = TF.leaky_relu(x, 0.2).flatten(1)
        return self.fc_mu(x), self.fc_var(x)


class Zencoder(nn.Module):
    """SEAN's style encoder: image -> per-region style codes ST (N, L, output_nc).

    ``model`` (published layout, InstanceNorm without parameters, LeakyReLU 0.2): ReflectionPad 1 +
    Conv3x3 (input_nc -> ngf), ``n_downsampling`` Conv3x3 stride 2 (doubling), one ConvTranspose3x3
    stride 2 (-> 2x channels), ReflectionPad 1 + Conv3x3 (-> output_nc), Tanh: features at half the
    image size. The style codes are the region-wise average pooling of the features over each class's
    pixels (labels sampled at the feature size with the nearest rule), zero for absent classes
    (:func:`semnorm.nn.region_style_codes`, one fused op instead of the published per-region loop).

    Published keys (ngf 32, 2 downsamplings): ``model.1`` (32, 3, 3, 3), ``model.4`` (64, 32, 3, 3),
    ``model.7`` (128, 64, 3, 3), ``model.10`` (128, 256, 3, 3) (ConvTranspose), ``model.14``
    (512, 256, 3, 3), each with bias. (The published InstanceNorm after the ConvTranspose is declared
    with half its channels; parameter-free, it behaves the same.)
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 512, ngf: int = 32, n_downsampling: int = 2,
                 impl: str | None = None) -> None:
        super().__init__()
        self.output_nc, self.impl = output_nc, impl
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(input_nc, ngf, 3, padding=0),
                                   nn.InstanceNorm2d(ngf), nn.LeakyReLU(0.2)]
        for i in range(n_downsampling):
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * c), nn.LeakyReLU(0.2)]
        c = ngf * 2 ** n_downsampling
        layers += [nn.ConvTranspose2d(c, 2 * c, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(2 * c),
                   nn.LeakyReLU(0.2)]
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(2 * c, output_nc, 3, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(N, input_nc, H, W) -> (N, output_nc, H', W') style features (H' = H / 2 by default)."""
        return self.model(image)

    def forward(self, image: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Style matrix ST (N, num_classes, output_nc) of ``image`` (N, 3, H, W) under ``labels``
        ((N, Hl, Wl) integer or (N, num_classes, Hl, Wl) one-hot, at any resolution)."""
        if not isinstance(image, torch.Tensor) or image.dim() != 4:
            raise ValueError(f"Zencoder: image must have shape (N, 3, H, W), got {tuple(getattr(image, 'shape', ()))}")
        return region_style_codes(self.features(image), labels, num_classes, impl=self.impl)
