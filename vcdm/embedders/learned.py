"""The default self-trained embedder: a small CNN trained contrastively on the dataset, without labels."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcdm.data.augment import AugmentConfig, augment
from vcdm.errors import VcdmError

# Bounds of the temperature; CLIP (Radford et al. 2021) clamps the logit scale 1/temperature at 100.
_MIN_TEMPERATURE = 0.01
_MAX_TEMPERATURE = 1.0

_POOL_SIZE = 4  # the backbone's output grid, (B, C, 4, 4)

_DEFAULT_AUGMENT = AugmentConfig(
    max_rotation_deg=25.0, max_translate=0.2, scale_range=(0.7, 1.3), contrast=0.3, brightness=0.2
)


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture and training defaults of the contrastive image encoder."""

    image_size: int = 28  # input height and width in pixels
    in_channels: int = 1  # 1 for gray, 3 for RGB
    channels: tuple[int, ...] = (16, 32, 64)  # conv stage widths; each stage downsamples by 2
    feature_dim: int = 256  # width of the pooled backbone features and the head's hidden layer
    dim: int = 32  # output embedding size: the y that the prior models and the decoder is conditioned on
    temperature_init: float = 0.2  # initial InfoNCE temperature (learned afterwards), in [min_temperature, 1]
    # Lower clamp of the learned temperature, in [0.01, 1] (CLIP: 0.01). Short runs need a low temperature
    # to learn fast; long ones cluster classes better with a floor (MNIST k-NN after 77k images: 0.92 at
    # 0.01, 0.94 at 0.3; after 40k images 0.3 gives 0.83 where 0.2 -> 0.15 learned gives 0.90).
    min_temperature: float = 0.1
    augment: AugmentConfig = _DEFAULT_AUGMENT  # views for the contrastive loss

    def __post_init__(self) -> None:
        for name in ("image_size", "in_channels", "feature_dim", "dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise VcdmError(f"EncoderConfig.{name}: expected a positive integer, got {value!r}")
        channels = self.channels
        if (
            not isinstance(channels, tuple | list)
            or not channels
            or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 8 and c % 8 == 0 for c in channels
            )
        ):
            raise VcdmError(
                f"EncoderConfig.channels: expected a non-empty tuple of multiples of 8, got {channels!r}"
            )
        for name, lo in (("min_temperature", _MIN_TEMPERATURE), ("temperature_init", self.min_temperature)):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not lo <= value <= _MAX_TEMPERATURE
            ):
                raise VcdmError(
                    f"EncoderConfig.{name}: expected a number in [{lo}, {_MAX_TEMPERATURE}], got {value!r}"
                )
        augment_cfg = self.augment
        if isinstance(augment_cfg, dict):  # rebuilt from JSON
            augment_cfg = AugmentConfig(**augment_cfg)
        if not isinstance(augment_cfg, AugmentConfig):
            raise VcdmError(f"EncoderConfig.augment: expected an AugmentConfig, got {augment_cfg!r}")
        object.__setattr__(self, "channels", tuple(channels))
        object.__setattr__(self, "augment", augment_cfg)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4), channels)


class ConvEncoder(nn.Module):
    """Small CNN: conv stages (GroupNorm, SiLU), average pool to 4x4, MLP head, L2-normalised output."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_prev = cfg.in_channels
        for c in cfg.channels:
            # No full-resolution stem: a strided conv first keeps the cost low on CPUs.
            layers += [
                nn.Conv2d(c_prev, c, 3, stride=2, padding=1),
                _norm(c),
                nn.SiLU(),
                nn.Conv2d(c, c, 3, padding=1),
                _norm(c),
                nn.SiLU(),
            ]
            c_prev = c
        # Pool to a coarse grid rather than to one pixel: the head then sees where strokes are, which a
        # digit's identity depends on (in our MNIST runs this learned much faster than global pooling).
        layers += [nn.AdaptiveAvgPool2d(_POOL_SIZE), nn.Flatten()]  # (B, C * 4 * 4)
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(c_prev * _POOL_SIZE**2, cfg.feature_dim), nn.SiLU(), nn.Linear(cfg.feature_dim, cfg.dim)
        )
        # CLIP's learned temperature, stored as log(1 / temperature).
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1 / cfg.temperature_init)))

    def forward(self, x: Tensor) -> Tensor:
        """Embed images.

        Args:
            x: float32 in [-1, 1], shape (B, in_channels, H, W).

        Returns:
            L2-normalised embeddings, float32 (B, dim).
        """
        return F.normalize(self.head(self.backbone(x)), dim=1)

    def logit_scale(self) -> Tensor:
        """1 / temperature, clamped to [1, 1 / min_temperature] as in CLIP; a scalar tensor with gradient."""
        max_log = -math.log(self.cfg.min_temperature)
        return self.log_inv_temperature.clamp(-math.log(_MAX_TEMPERATURE), max_log).exp()


class ContrastiveTask:
    """Symmetric InfoNCE loss between two augmented views, as in SimCLR / CLIP; uses no labels."""

    def __init__(self, augment_cfg: AugmentConfig) -> None:
        self.augment_cfg = augment_cfg

    def loss(self, model: ConvEncoder, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        """Per-sample contrastive loss.

        Args:
            model: the encoder being trained (its learned temperature scales the similarities).
            batch: {"image": float32 in [-1, 1] (B, C, H, W), ...}; other keys are ignored.
            generator: CPU generator, the only source of randomness (the augmentations).

        Returns:
            float32 (B,): each sample's loss, the mean of its two cross-entropy directions.
        """
        x = batch["image"]
        z1 = model(augment(x, self.augment_cfg, generator))  # (B, dim)
        z2 = model(augment(x, self.augment_cfg, generator))
        # Radford et al. 2021 (CLIP), Fig. 3: cross-entropy of the scaled cosine similarities against the
        # identity, over rows (view 1 -> view 2) and columns (view 2 -> view 1).
        logits = model.logit_scale() * z1 @ z2.T  # (B, B)
        target = torch.arange(x.shape[0], device=logits.device)
        loss_12 = F.cross_entropy(logits, target, reduction="none")
        loss_21 = F.cross_entropy(logits.T, target, reduction="none")
        return (loss_12 + loss_21) / 2


class LearnedEmbedder:
    """`Embedder` around a trained `ConvEncoder`; puts the encoder in eval mode and runs without grad."""

    def __init__(self, encoder: ConvEncoder) -> None:
        self.encoder = encoder.eval()
        self.dim = encoder.cfg.dim

    def encode_images(self, x: Tensor) -> Tensor:
        """Embed images.

        Args:
            x: float32 in [-1, 1], shape (B, in_channels, image_size, image_size), on any device.

        Returns:
            L2-normalised embeddings, float32 (B, dim), on the encoder's device.
        """
        cfg = self.encoder.cfg
        if x.ndim != 4 or x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise VcdmError(
                f"learned embedder: expected images (B, {cfg.in_channels}, {cfg.image_size}, "
                f"{cfg.image_size}), got {tuple(x.shape)}"
            )
        device = next(self.encoder.parameters()).device
        with torch.no_grad():
            return self.encoder(x.to(device, torch.float32))

    def encode_text(self, texts: list[str]) -> Tensor:
        """Not available: raises VcdmError."""
        raise VcdmError("the learned embedder has no text encoder; use a CLIP embedder for text")
