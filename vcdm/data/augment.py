"""Batched image augmentations on tensors (random affine + colour jitter), without torchvision.

Used by the contrastive embedder (two random views per image) and by `embed_images` to enlarge the
prior's training set with embeddings of augmented copies (Harvey & Wood 2023, Sec. 4).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vcdm.errors import VcdmError

# Uniform draws per sample: rotation, scale, x/y translation, flip, contrast, brightness.
_NUM_DRAWS = 7


@dataclass(frozen=True)
class AugmentConfig:
    """Magnitudes of the random augmentations; every zero magnitude switches that part off."""

    max_rotation_deg: float = 10.0  # rotation angle uniform in [-r, r] degrees, 0 <= r <= 180
    max_translate: float = 0.1  # shift per axis uniform in [-t, t], as a fraction of the image size
    scale_range: tuple[float, float] = (0.9, 1.1)  # zoom factor uniform in [lo, hi], 0 < lo <= hi
    hflip: bool = False  # flip left-right with probability 1/2; digits must not be flipped
    contrast: float = 0.2  # multiply (x - per-image mean) by 1 + U(-c, c), 0 <= c <= 1
    brightness: float = 0.1  # add U(-b, b), 0 <= b <= 2

    def __post_init__(self) -> None:
        _check_range("max_rotation_deg", self.max_rotation_deg, 0.0, 180.0)
        _check_range("max_translate", self.max_translate, 0.0, 1.0)
        _check_range("contrast", self.contrast, 0.0, 1.0)
        _check_range("brightness", self.brightness, 0.0, 2.0)
        if not isinstance(self.hflip, bool):
            raise VcdmError(f"AugmentConfig.hflip: expected true or false, got {self.hflip!r}")
        scale = self.scale_range
        if (
            not isinstance(scale, tuple | list)
            or len(scale) != 2
            or not all(isinstance(s, int | float) and not isinstance(s, bool) for s in scale)
            or not 0 < scale[0] <= scale[1]
        ):
            raise VcdmError(f"AugmentConfig.scale_range: expected two numbers 0 < lo <= hi, got {scale!r}")
        # A list (from JSON) becomes the tuple that the frozen config stores.
        object.__setattr__(self, "scale_range", (float(scale[0]), float(scale[1])))

    @property
    def is_geometric_identity(self) -> bool:
        """True when the affine part is the identity for every draw (no resampling needed)."""
        return (
            self.max_rotation_deg == 0
            and self.max_translate == 0
            and self.scale_range == (1.0, 1.0)
            and not self.hflip
        )


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
        raise VcdmError(f"AugmentConfig.{name}: expected a number in [{lo}, {hi}], got {value!r}")


def augment(x: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Apply one random affine transform and colour jitter per sample.

    The affine warp resamples bilinearly with `padding_mode="border"`: pixels that come from outside
    the image repeat the nearest edge pixel. For gray digits the edge is the background (-1), so this
    equals filling with -1; for natural images it avoids black corners.

    Args:
        x: images, float32 in [-1, 1], shape (B, C, H, W).
        cfg: augmentation magnitudes.
        generator: CPU generator; the only source of randomness (same state -> same output).

    Returns:
        Augmented images, float32 in [-1, 1], shape (B, C, H, W).
    """
    if x.ndim != 4:
        raise ValueError(f"augment: expected images of shape (B, C, H, W), got {tuple(x.shape)}")
    b = x.shape[0]
    # Always draw the same number of values, so the generator advances identically for every config.
    u = torch.rand(b, _NUM_DRAWS, generator=generator).to(x.device)
    u_rot, u_scale, u_tx, u_ty, u_flip, u_contrast, u_bright = u.unbind(1)

    out = x.float()
    if not cfg.is_geometric_identity:
        angle = math.radians(cfg.max_rotation_deg) * (2 * u_rot - 1)
        lo, hi = cfg.scale_range
        scale = lo + (hi - lo) * u_scale
        # affine_grid maps output to input coordinates in [-1, 1] (the image spans 2 units), so a zoom
        # by `scale` divides by it and a shift of a fraction f of the image is 2f.
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        flip = torch.where(u_flip < 0.5, -1.0, 1.0) if cfg.hflip else torch.ones_like(u_flip)
        tx = 2 * cfg.max_translate * (2 * u_tx - 1)
        ty = 2 * cfg.max_translate * (2 * u_ty - 1)
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
        )  # (B, 2, 3)
        grid = F.affine_grid(theta, list(out.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)

    if cfg.contrast > 0:
        factor = (1 + cfg.contrast * (2 * u_contrast - 1)).view(b, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = mean + factor * (out - mean)
    if cfg.brightness > 0:
        out = out + (cfg.brightness * (2 * u_bright - 1)).view(b, 1, 1, 1)
    return out.clamp(-1.0, 1.0)
