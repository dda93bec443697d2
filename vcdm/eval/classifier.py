"""The evaluation classifier as a FID feature extractor (its penultimate features), and its accuracy.

The network is vcdm.networks.classifier; it is trained and exported like every stage (kind "classifier",
vcdm.stages.classifier), and `ClassifierExtractor.from_file` reads that export.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor, nn

from vcdm.errors import VcdmError
from vcdm.networks.classifier import Classifier


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
        """Load a classifier export: its stage directory (e.g. RUN/classifier) or that directory's weights file."""
        from vcdm.stages import load_model

        path = Path(path)
        if not path.exists():
            raise VcdmError(f"--classifier: {path} does not exist")
        model, _ = load_model(path.parent if path.suffix == ".safetensors" else path, "classifier")
        return cls(model, device)

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
