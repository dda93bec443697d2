"""A small image classifier (conv stages -> 4x4 pool -> features -> logits).

Its penultimate features serve for FID on small domains (vcdm.eval.classifier); with
``noise_conditioned=True`` it takes a noise level too (a FiLM scale/shift from a noise embedding), as
classifier guidance needs (Dhariwal & Nichol 2021); inputs then follow EDM's preconditioning (Karras et al.
2022, Table 1), see ``classifier_input``. Trained and exported like every stage (vcdm.stages.classifier).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcdm.errors import VcdmError

NOISE_EMB_DIM = 128  # width of the noise-level embedding (noise-conditioned classifiers only)
POOLED_SIZE = 4  # the last stage's map is average-pooled to POOLED_SIZE x POOLED_SIZE before the features


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of a Classifier; rebuilt from its JSON form."""

    image_size: int = 28  # input height = width in pixels
    in_channels: int = 1  # 1 for gray, 3 for RGB
    num_classes: int = 10  # number of labels
    channels: tuple[int, ...] = (32, 64, 128)  # width of each stage; every stage after the first halves H, W
    feature_dim: int = 128  # size of the penultimate features used for FID
    dropout: float = 0.1  # dropout on the features during training (needs a generator in forward)
    noise_conditioned: bool = False  # True: forward also takes c_noise = ln(sigma) / 4 (classifier guidance)

    def __post_init__(self) -> None:
        def bad(field: str, expected: str) -> VcdmError:
            return VcdmError(f"ClassifierConfig.{field}: expected {expected}, got {getattr(self, field)!r}")

        for field in ("image_size", "in_channels", "num_classes", "feature_dim"):
            if not _is_positive_int(getattr(self, field)):
                raise bad(field, "a positive int")
        if self.num_classes < 2:
            raise bad("num_classes", "at least 2")
        if not isinstance(self.channels, tuple) or not all(map(_is_positive_int, self.channels or (0,))):
            raise bad("channels", "a non-empty tuple of positive ints")
        if self.image_size < 2 ** (len(self.channels) - 1):
            raise bad(
                "image_size", f"at least {2 ** (len(self.channels) - 1)} px for {len(self.channels)} stages"
            )
        if not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise bad("dropout", "a float in [0, 1)")
        if not isinstance(self.noise_conditioned, bool):
            raise bad("noise_conditioned", "a bool")

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        """Rebuild from ``dataclasses.asdict`` output after a JSON round trip (lists become tuples)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise VcdmError(f"ClassifierConfig: unknown fields {unknown}; allowed: {sorted(names)}")
        d = dict(d)
        if isinstance(d.get("channels"), list):
            d["channels"] = tuple(d["channels"])
        return cls(**d)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _num_groups(channels: int) -> int:
    return 8 if channels % 8 == 0 else 1


def noise_embedding(c_noise: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of the noise level (Vaswani et al. 2017, as in EDM's PositionalEmbedding).

    Args:
        c_noise: (B,) float32, e.g. ln(sigma) / 4.
        dim: even embedding width.

    Returns:
        (B, dim) float32.
    """
    half = dim // 2
    freqs = (1 / 10000) ** (torch.arange(half, device=c_noise.device, dtype=torch.float32) / (half - 1))
    args = c_noise.float()[:, None] * freqs[None, :]
    return torch.cat([args.cos(), args.sin()], dim=1)


class _Stage(nn.Module):
    """Two 3x3 conv -> GroupNorm -> SiLU layers; the first norm's output gets an optional FiLM."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm1 = nn.GroupNorm(_num_groups(out_ch), out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(_num_groups(out_ch), out_ch)
        self.film = None
        if emb_dim is not None:
            self.film = nn.Linear(emb_dim, 2 * out_ch)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.norm1(self.conv1(x))
        if self.film is not None:
            scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = F.silu(h)
        return F.silu(self.norm2(self.conv2(h)))


class Classifier(nn.Module):
    """Conv stages (halving the resolution between them) -> 4x4 average pool -> features -> logits.

    Args:
        cfg: the architecture.
    """

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        emb_dim = NOISE_EMB_DIM if cfg.noise_conditioned else None
        self.noise_mlp = None
        if cfg.noise_conditioned:
            self.noise_mlp = nn.Sequential(
                nn.Linear(NOISE_EMB_DIM, NOISE_EMB_DIM), nn.SiLU(), nn.Linear(NOISE_EMB_DIM, NOISE_EMB_DIM)
            )
        widths = (cfg.in_channels, *cfg.channels)
        self.stages = nn.ModuleList(_Stage(a, b, emb_dim) for a, b in zip(widths[:-1], widths[1:]))
        self.to_features = nn.Linear(cfg.channels[-1] * POOLED_SIZE**2, cfg.feature_dim)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def features(self, x: Tensor, c_noise: Tensor | None = None) -> Tensor:
        """Penultimate features.

        Args:
            x: (B, in_channels, image_size, image_size) float32 in [-1, 1]; for a noise-conditioned
                classifier the noisy image scaled by c_in (see ``classifier_input``).
            c_noise: (B,) float32 ln(sigma) / 4; required iff cfg.noise_conditioned.

        Returns:
            (B, feature_dim) float32.
        """
        cfg = self.cfg
        if x.ndim != 4 or x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise ValueError(
                f"classifier expects (B, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}) images, "
                f"got {tuple(x.shape)}"
            )
        emb = None
        if self.noise_mlp is not None:
            if c_noise is None:
                raise ValueError("a noise-conditioned classifier needs c_noise")
            emb = self.noise_mlp(noise_embedding(c_noise.reshape(-1), NOISE_EMB_DIM))
        elif c_noise is not None:
            raise ValueError("c_noise given to a classifier built with noise_conditioned=False")
        h = x
        for i, stage in enumerate(self.stages):
            if i > 0:
                h = F.avg_pool2d(h, 2)  # (B, C, H/2, W/2)
            h = stage(h, emb)
        # A coarse 4x4 grid rather than a global mean: digit classes depend on where strokes are.
        h = F.adaptive_avg_pool2d(h, POOLED_SIZE).flatten(1)  # (B, channels[-1] * 16)
        return F.silu(self.to_features(h))

    def forward(
        self, x: Tensor, c_noise: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Class logits.

        Args:
            x: images as for ``features``.
            c_noise: as for ``features``.
            generator: in training mode, draws the feature dropout mask (a CPU generator); without one no
                dropout is applied, so global RNG state is never used.

        Returns:
            (B, num_classes) float32 logits.
        """
        h = self.features(x, c_noise)
        p = self.cfg.dropout
        if self.training and generator is not None and p > 0:
            keep = torch.rand(h.shape, generator=generator, device=generator.device) >= p
            h = h * keep.to(h.device, h.dtype) / (1 - p)
        return self.head(h)


def classifier_input(x: Tensor, sigma: Tensor, sigma_data: float = 0.5) -> tuple[Tensor, Tensor]:
    """Network input for a noise-conditioned classifier at noise level sigma.

    Args:
        x: (B, C, H, W) float32 noisy images x0 + sigma * n.
        sigma: (B,) float32 > 0 noise levels.
        sigma_data: data standard deviation (0.5 for images in [-1, 1]).

    Returns:
        (c_in * x, c_noise): (B, C, H, W) and (B,) float32.
    """
    # Karras et al. 2022, Table 1: c_in = 1 / sqrt(sigma^2 + sigma_data^2), c_noise = ln(sigma) / 4.
    c_in = 1 / (sigma**2 + sigma_data**2).sqrt()
    return x * c_in.reshape(-1, 1, 1, 1), sigma.log() / 4
