"""Latent diffusion (Rombach et al. 2022): the autoencoder stage's config and the latent space a diffusion
stage works in.

A stage with `space = "latent"` (decoder, baseline, upsampler, Palette) trains on z = s * mu(x), the posterior
means of the run's images under RUN/autoencoder scaled by the export's `scale_factor` s (measured on the training
set so that z has unit variance: `measure_scale`), and the pipeline decodes its samples, x = D(z / s), before
anything else sees them. `LatentSpace` is that pair of maps. A latent Palette model reads its condition image as a
latent too, with the mask on the latent grid (`latent_mask`); a latent upsampler reads the low-res pixels on the
latent grid (LDM-SR; pixel-unshuffled where the grid is smaller). This module imports no config and no stage, so vcdm.config can take
`AutoencoderStage` from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcdm.errors import VcdmError
from vcdm.networks.autoencoder import AutoencoderConfig, KLAutoencoder
from vcdm.training.loop import TrainConfig

SPACES = ("pixel", "latent")
RECONSTRUCTION = ("l1", "l2")
SCALE_KEY = "scale_factor"  # where an autoencoder export's meta holds s


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise VcdmError(f"{name} must be {expected}, got {got!r}")


@dataclass(frozen=True)
class AutoencoderStage:
    """The first stage of latent diffusion: a KL-regularised autoencoder (vcdm.stages.autoencoder).

    Loss per image (LDM's LPIPSWithDiscriminator, with the pixel mean in place of LDM's pixel sum, so the
    weights keep their meaning): rec + kl_weight * KL / (C H W) + perceptual_weight * perceptual
    + lambda_adv * disc_weight * (-D(x_rec)), and the discriminator's hinge loss once it is switched on.
    """

    net: AutoencoderConfig = field(default_factory=AutoencoderConfig)  # image_size, in_channels from the data
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        batch_size=32, total_nimg=200_000, lr=1e-3, warmup_nimg=2_000, ema_halflife_nimg=10_000,
        precision="fp32", checkpoint_every_nimg=20_000))  # fmt: skip
    reconstruction: str = "l1"  # per-pixel reconstruction loss: "l1" (LDM) or "l2"
    kl_weight: float = 1e-6  # weight of KL(q(z|x) || N(0, I)) (LDM: 1e-6)
    # weight of the distance between the evaluation classifier's features of x and x_rec (0 = off; it trains
    # that classifier once per dataset, vcdm.eval.scoring.get_classifier). Off by default: rFID is measured on
    # those same features, so training against them would flatter the metric.
    perceptual_weight: float = 0.0
    disc_weight: float = 0.5  # weight of the patch discriminator's adversarial term (0 = no discriminator)
    disc_start_nimg: int = 50_000  # images seen before the discriminator is switched on
    disc_channels: int = 32  # width of the discriminator's first layer
    disc_layers: int = 2  # strided layers of the discriminator
    scale_images: int = 4096  # training images the latent scale factor is measured on (at most)

    def __post_init__(self) -> None:
        _check(self.reconstruction in RECONSTRUCTION, "autoencoder.reconstruction", f"one of {RECONSTRUCTION}",
               self.reconstruction)  # fmt: skip
        for name in ("kl_weight", "perceptual_weight", "disc_weight"):
            v = getattr(self, name)
            _check(v >= 0, f"autoencoder.{name}", "a number >= 0", v)
        _check(
            self.disc_start_nimg >= 0, "autoencoder.disc_start_nimg", "an integer >= 0", self.disc_start_nimg
        )
        _check(self.disc_channels >= 1, "autoencoder.disc_channels", "an integer >= 1", self.disc_channels)
        _check(self.disc_layers >= 1, "autoencoder.disc_layers", "an integer >= 1", self.disc_layers)
        _check(self.scale_images >= 2, "autoencoder.scale_images", "an integer >= 2", self.scale_images)


class LatentSpace(nn.Module):
    """The maps between images and a latent diffusion stage's space: encode(x) = s * mu(x), decode(z) = D(z / s).

    Args:
        autoencoder: the trained KLAutoencoder (frozen).
        scale_factor: s, from the autoencoder export's meta.
    """

    def __init__(self, autoencoder: KLAutoencoder, scale_factor: float) -> None:
        super().__init__()
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.scale_factor = float(scale_factor)

    @property
    def cfg(self) -> AutoencoderConfig:
        return self.autoencoder.cfg

    def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(C, H, W) of images -> (latent_channels, H / f, W / f)."""
        _, h, w = image_shape
        return self.cfg.latent_channels, h // self.cfg.factor, w // self.cfg.factor

    @torch.no_grad()
    def encode(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Images (B, C, H, W) float in [-1, 1] (or uint8) -> scaled latents (B, c, H/f, W/f) float32."""
        dev = next(self.autoencoder.parameters()).device
        out = []
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(dev)
            xb = xb.float() / 127.5 - 1 if xb.dtype == torch.uint8 else xb.float()
            out.append(self.autoencoder.encode(xb)[0].float() * self.scale_factor)
        return torch.cat(out) if out else torch.zeros(0, *self.latent_shape(tuple(x.shape[1:])))

    @torch.no_grad()
    def decode(self, z: Tensor, batch_size: int = 256) -> Tensor:
        """Scaled latents (B, c, h, w) -> images (B, C, h f, w f) float32, clamped to [-1, 1]."""
        dev = next(self.autoencoder.parameters()).device
        parts = [self.autoencoder.decode(z[i : i + batch_size].to(dev).float() / self.scale_factor).float()
                 for i in range(0, len(z), batch_size)]  # fmt: skip
        return torch.cat(parts).clamp(-1, 1)


def latent_side(size: int, factor: int, section: str) -> int:
    """The latent grid's side for images of side `size`: size / f, after a one-line VcdmError naming
    `section`.space when f does not divide it."""
    if size % factor:
        raise VcdmError(f"{section}.space 'latent' needs the data's size {size} (data.image_size) to be a multiple "
                        f"of autoencoder.net.factor ({factor})")  # fmt: skip
    return size // factor


def latent_mask(masks: Tensor, factor: int) -> Tensor:
    """Masks (B, 1, H, W) in {0, 1}, 1 = to fill, on the latent grid (B, 1, H / f, W / f) float32: a latent cell
    is a hole if any of its f x f pixels is (max-pool), so no cell that sees a hole is kept."""
    return F.max_pool2d(masks.float(), factor)


@torch.no_grad()
def measure_scale(autoencoder: KLAutoencoder, images: Tensor, batch_size: int = 256) -> float:
    """s = 1 / std(mu(x)) over every element of the posterior means of `images` (LDM's `scale_by_std`; Stable
    Diffusion's 0.18215 is this number for its own autoencoder): scaled latents s * mu have unit variance.

    Args:
        autoencoder: the trained autoencoder. images: uint8 or float in [-1, 1] (N, C, H, W), N >= 2.
    """
    z = LatentSpace(autoencoder, 1.0).encode(images, batch_size)
    std = float(z.double().std())
    if not std > 0:
        raise VcdmError(f"the autoencoder's latents have standard deviation {std}; cannot scale them")
    return 1.0 / std
