"""A convolutional KL-regularised autoencoder (the first stage of latent diffusion) and a patch discriminator.

Rombach et al. 2022 (LDM), Sec. 3.1 and Appendix G: the encoder maps an image x (C, H, W) in [-1, 1] to the
parameters of a diagonal Gaussian posterior q(z | x) = N(mu, diag(exp(logvar))) over latents
(latent_channels, H / f, W / f); the decoder maps z back to pixels. Each level of the encoder holds residual
blocks and halves the resolution with a stride-2 convolution (log2 f times); the decoder mirrors it with
nearest-neighbour upsampling and a convolution. There is no attention: at 64x64 and f <= 8 the receptive field
of the residual stacks already covers the latent grid.

The discriminator is the PatchGAN of pix2pix (Isola et al. 2017) used by LDM: strided 4x4 convolutions giving
one real/fake logit per overlapping patch, with GroupNorm in place of BatchNorm so that its output for one
image does not depend on the rest of the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcdm.errors import VcdmError

FACTORS = (2, 4, 8, 16)
LOGVAR_RANGE = (-30.0, 20.0)  # the posterior's log-variance is clamped here (LDM's DiagonalGaussian)


def _check(ok: bool, name: str, expected: str, got: object) -> None:
    if not ok:
        raise VcdmError(f"{name} must be {expected}, got {got!r}")


@dataclass(frozen=True)
class AutoencoderConfig:
    factor: int = 4  # spatial downsampling factor f: latents are (latent_channels, H / f, W / f)
    latent_channels: int = 4  # channels of z
    base_channels: int = 32  # channels of the first level; level i has base * min(2^i, max_mult)
    max_mult: int = 4  # cap on the channel multiplier of the deeper levels
    num_res_blocks: int = 1  # residual blocks per level (encoder and decoder each)
    image_size: int = 64  # set from the data (the encoder is convolutional: any multiple of f works)
    in_channels: int = 3  # set from the data

    def __post_init__(self) -> None:
        _check(self.factor in FACTORS, "autoencoder.net.factor", f"one of {FACTORS}", self.factor)
        for name in ("latent_channels", "base_channels", "max_mult", "num_res_blocks", "in_channels"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 1, f"autoencoder.net.{name}", "an integer >= 1", v)
        _check(self.image_size % self.factor == 0, "autoencoder.net.image_size",
               f"a multiple of autoencoder.net.factor ({self.factor})", self.image_size)  # fmt: skip

    @property
    def levels(self) -> int:
        return int(math.log2(self.factor)) + 1

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * min(2**i, self.max_mult) for i in range(self.levels))

    @property
    def latent_size(self) -> int:
        return self.image_size // self.factor


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class _Res(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus a (1x1-projected) skip."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1),
                                  _norm(out_ch), nn.SiLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1))  # fmt: skip
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class Encoder(nn.Module):
    """x (B, C, H, W) -> (mu, logvar), each (B, latent_channels, H / f, W / f)."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        ch = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)]
        for i, c in enumerate(ch):
            prev = ch[max(i - 1, 0)]
            if i > 0:
                layers.append(nn.Conv2d(prev, prev, 3, stride=2, padding=1))  # halve H and W
            layers += [_Res(prev if j == 0 else c, c) for j in range(cfg.num_res_blocks)]
        layers += [
            _Res(ch[-1], ch[-1]),
            _norm(ch[-1]),
            nn.SiLU(),
            nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(x).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)


class Decoder(nn.Module):
    """z (B, latent_channels, h, w) -> x (B, C, h f, w f), not clamped."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        ch = cfg.channels[::-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1), _Res(ch[0], ch[0])]
        for i, c in enumerate(ch):
            prev = ch[max(i - 1, 0)]
            if i > 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(prev, prev, 3, padding=1)]
            layers += [_Res(prev if j == 0 else c, c) for j in range(cfg.num_res_blocks)]
        layers += [_norm(ch[-1]), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(
            ch[-1], cfg.in_channels, 3, padding=1
        )  # the "last layer" of LDM's adaptive weight

    def forward(self, z: Tensor) -> Tensor:
        return self.conv_out(self.net(z))


class KLAutoencoder(nn.Module):
    """Encoder + decoder with a diagonal Gaussian posterior (LDM's "KL-f" first stage).

    Args:
        cfg: the architecture.
    """

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def _check(self, x: Tensor) -> None:
        f, c = self.cfg.factor, self.cfg.in_channels
        if x.ndim != 4 or x.shape[1] != c or x.shape[2] % f or x.shape[3] % f:
            raise VcdmError(f"the autoencoder takes images (B, {c}, H, W) with H and W multiples of {f}, got "
                            f"{tuple(x.shape)}")  # fmt: skip

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior of images x (B, C, H, W) in [-1, 1]: (mu, logvar), each (B, latent_channels, H/f, W/f)."""
        self._check(x)
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Images (B, C, h f, w f) from latents z (B, latent_channels, h, w) (unscaled), not clamped."""
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruct x through a posterior sample (the mean when generator is None): (x_rec, mu, logvar)."""
        mu, logvar = self.encode(x)
        return self.decode(sample_posterior(mu, logvar, generator)), mu, logvar


def sample_posterior(mu: Tensor, logvar: Tensor, generator: torch.Generator | None) -> Tensor:
    """z = mu + exp(logvar / 2) n with n ~ N(0, I) drawn from `generator`; mu itself when generator is None."""
    if generator is None:
        return mu
    n = torch.randn(mu.shape, generator=generator, device=generator.device).to(mu.device, mu.dtype)
    return mu + (0.5 * logvar).exp() * n


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per sample, summed over the latent's elements: (B,).

    Closed form (Kingma & Welling 2014, Appendix B): 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar).
    """
    return 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).flatten(1).sum(1)


class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, C, H, W) -> real/fake logits (B, 1, h, w), one per overlapping patch.

    Args:
        in_channels: image channels. channels: width of the first layer (doubled per layer, capped at 8x).
        layers: strided 4x4 layers (each halves the resolution; the receptive field grows with them).
    """

    def __init__(self, in_channels: int, channels: int = 32, layers: int = 2) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers + 1):
            nxt = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(c, nxt, 4, stride=stride, padding=1), _norm(nxt), nn.LeakyReLU(0.2)]
            c = nxt
        mods.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """The discriminator's hinge loss per sample (B,): 0.5 (E relu(1 - D(x)) + E relu(1 + D(x_rec))) over
    patches (Lim & Ye 2017; LDM's `hinge_d_loss`)."""
    real = F.relu(1 - logits_real.float()).flatten(1).mean(1)
    fake = F.relu(1 + logits_fake.float()).flatten(1).mean(1)
    return 0.5 * (real + fake)
