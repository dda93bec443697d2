"""A small image classifier: its penultimate features serve for FID on small domains (MNIST-sized data).

With ``noise_conditioned=True`` it takes a noise level too (a FiLM scale/shift from a noise embedding), as
classifier guidance needs (Dhariwal & Nichol 2021); inputs then follow EDM's preconditioning (Karras et al.
2022, Table 1), see ``classifier_input``.

A classifier is saved as one safetensors file whose metadata holds its config (``save_classifier`` /
``load_classifier``); ``load_extractor("classifier", path)`` reads that file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor, nn

import vcdm
from vcdm.errors import VcdmError
from vcdm.fileio import atomic_write_bytes

FILE_FORMAT = "vcdm-classifier"
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


def random_translate(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each image by a random whole-pixel offset in [-max_shift, max_shift]^2, edges replicated.

    Args:
        x: (B, C, H, W) float32.
        max_shift: largest shift in pixels (0 returns x).
        generator: CPU generator for the offsets.

    Returns:
        (B, C, H, W) float32.
    """
    if max_shift == 0:
        return x
    B, _, H, W = x.shape
    s = max_shift
    offsets = torch.randint(-s, s + 1, (B, 2), generator=generator).to(x.device)
    padded = F.pad(x, (s, s, s, s), mode="replicate")  # (B, C, H + 2s, W + 2s)
    rows = torch.arange(H, device=x.device) + s - offsets[:, :1]  # (B, H)
    cols = torch.arange(W, device=x.device) + s - offsets[:, 1:]  # (B, W)
    batch = torch.arange(B, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


class ClassifierTask:
    """Training task for the shared loop: per-sample cross-entropy on batch["label"].

    Args:
        augment: random translations of up to ``max_shift`` pixels.
        max_shift: translation range in pixels.
        noise: train a noise-conditioned classifier: images get noise with ln(sigma) ~ N(p_mean, p_std^2)
            (Karras et al. 2022, Sec. 5) and enter through ``classifier_input``.
        p_mean, p_std: the log-normal noise-level distribution.
        sigma_data: data standard deviation for c_in.
    """

    def __init__(
        self,
        augment: bool = True,
        max_shift: int = 2,
        noise: bool = False,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        sigma_data: float = 0.5,
    ) -> None:
        self.augment = augment
        self.max_shift = max_shift
        self.noise = noise
        self.p_mean, self.p_std, self.sigma_data = p_mean, p_std, sigma_data

    def loss(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        """Per-sample cross-entropy.

        Args:
            model: a Classifier (possibly wrapped, e.g. by DDP); called as model(x, c_noise, generator=...).
            batch: "image" (B, C, H, W) float32 in [-1, 1] and "label" (B,) int64.
            generator: CPU generator for augmentation, noise and dropout.

        Returns:
            (B,) float32 losses.
        """
        if "label" not in batch:
            raise VcdmError("classifier training needs a labelled dataset: the batch has no 'label'")
        x, labels = batch["image"], batch["label"]
        if self.augment:
            x = random_translate(x, self.max_shift, generator)
        c_noise = None
        if self.noise:
            B = x.shape[0]
            sigma = (torch.randn(B, generator=generator) * self.p_std + self.p_mean).exp().to(x.device)
            n = torch.randn(x.shape, generator=generator).to(x.device)
            x, c_noise = classifier_input(x + sigma.reshape(-1, 1, 1, 1) * n, sigma, self.sigma_data)
        logits = model(x, c_noise, generator=generator)
        return F.cross_entropy(logits.float(), labels.to(logits.device), reduction="none")


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _batched(fn, images: Tensor, device: torch.device, batch_size: int) -> Tensor:
    if len(images) == 0:
        return fn(images.to(device, torch.float32)).cpu()
    outs = [
        fn(images[i : i + batch_size].to(device, torch.float32)).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(outs)


def accuracy(model: Classifier, images: Tensor, labels: Tensor, batch_size: int = 512) -> float:
    """Fraction of images whose argmax logit equals the label.

    Args:
        model: a plain (not noise-conditioned) Classifier.
        images: (N, C, H, W) float32 in [-1, 1].
        labels: (N,) int64.
        batch_size: images per forward pass.

    Returns:
        accuracy in [0, 1].
    """
    if len(images) == 0:
        raise ValueError("accuracy of an empty set")
    logits = _batched(model, images, _device_of(model), batch_size)
    return (logits.argmax(dim=1) == labels.cpu()).float().mean().item()


def model_hash(model: Classifier) -> str:
    """12 hex digits of a SHA-256 over the config and the weights; names the features in reports."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(model.cfg), sort_keys=True).encode())
    for key, value in sorted(model.state_dict().items()):
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def save_classifier(model: Classifier, path: str | Path) -> None:
    """Write weights + config (in the safetensors metadata) to one file, atomically."""
    metadata = {
        "format": FILE_FORMAT,
        "config": json.dumps(dataclasses.asdict(model.cfg)),
        "vcdm_version": vcdm.__version__,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild a Classifier from a file written by ``save_classifier``; returns it in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise VcdmError(f"--classifier / eval.classifier: file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise VcdmError(f"{path}: not a safetensors classifier file ({exc})") from exc
    if metadata.get("format") != FILE_FORMAT or "config" not in metadata:
        raise VcdmError(f"{path}: not a vcdm classifier (metadata format {metadata.get('format')!r})")
    model = Classifier(ClassifierConfig.from_dict(json.loads(metadata["config"])))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise VcdmError(
            f"{path}: weights do not match the saved config ({str(exc).splitlines()[0]})"
        ) from exc
    return model.to(device).eval()


class ClassifierExtractor:
    """FeatureExtractor around a trained plain Classifier (its penultimate features).

    Args:
        model: the classifier (moved to ``device``; not otherwise modified).
        device: where it runs; features are returned on the CPU.
    """

    def __init__(self, model: Classifier, device: str | torch.device | None = None) -> None:
        if model.cfg.noise_conditioned:
            raise VcdmError(
                "a noise-conditioned classifier (for guidance) cannot serve as a FID feature extractor"
            )
        self.model = model if device is None else model.to(device)
        self.name = f"classifier:{model_hash(model)}"
        self.dim = model.cfg.feature_dim

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> ClassifierExtractor:
        """Load a file written by ``save_classifier``."""
        return cls(load_classifier(path, device), device)

    def _check(self, images: Tensor) -> None:
        cfg = self.model.cfg
        expected = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise VcdmError(
                f"{self.name}: trained on {expected} images (C, H, W), got {tuple(images.shape[1:])}"
            )

    def features(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """Penultimate features.

        Args:
            images: (N, C, H, W) float32 in [-1, 1], the classifier's image size.
            batch_size: images per forward pass.

        Returns:
            (N, feature_dim) float32 on the CPU.
        """
        self._check(images)
        return _batched(self.model.features, images, _device_of(self.model), batch_size)

    def predict(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """Predicted labels.

        Args:
            images: as for ``features``.
            batch_size: images per forward pass.

        Returns:
            (N,) int64 argmax of the logits.
        """
        self._check(images)
        return _batched(self.model, images, _device_of(self.model), batch_size).argmax(dim=1)
