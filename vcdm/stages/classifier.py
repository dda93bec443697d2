"""Classifier stages: the evaluation classifier (FID features, class histograms) and the noise-aware
classifier p(label | x, sigma) of classifier guidance. Both are vcdm.networks.classifier networks trained with
the shared loop and exported like every stage."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcdm.config import RunConfig, from_dict, to_dict
from vcdm.data import ImageData
from vcdm.errors import VcdmError
from vcdm.networks.classifier import Classifier, ClassifierConfig, classifier_input
from vcdm.runs import META, RunDir
from vcdm.stages.registry import Prepared, StageKind, load_model, register

NOISY_DIR = "noisy_classifier"  # RUN/noisy_classifier


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


def _resolve_classifier(cfg: RunConfig, data: ImageData, run: RunDir) -> RunConfig:
    _, c, h, _ = data.images.shape
    classes = data.num_classes if data.num_classes >= 2 else cfg.eval.classifier.num_classes
    net = replace(cfg.eval.classifier, image_size=h, in_channels=c, num_classes=classes)
    return replace(cfg, eval=replace(cfg.eval, classifier=net))


def _labelled(data: ImageData, what: str) -> dict[str, Tensor]:
    if data.labels is None:
        raise VcdmError(f"{data.source}: the {what} needs class labels (class subfolders or npz labels)")
    return {"image": data.images, "label": data.labels}


def _prepare_classifier(cfg: RunConfig, data: ImageData, run: RunDir) -> Prepared:
    tensors = _labelled(data, "evaluation classifier")
    return Prepared({"net": to_dict(cfg.eval.classifier)}, tensors, ClassifierTask())


def _prepare_noisy(cfg: RunConfig, data: ImageData, run: RunDir) -> Prepared:
    """Noise levels follow the image decoder's training distribution (decoder.diffusion), and so does the image
    size: the classifier guides the decoder's samples, at decoder.image_size (the data's size when None)."""
    size = cfg.decoder.image_size or data.images.shape[-1]
    tensors = _labelled(data, "noisy classifier")
    tensors["image"] = data.images_at(size)
    d = cfg.decoder.diffusion
    if d.parameterization != "edm":
        raise VcdmError(f"decoder.diffusion.parameterization must be 'edm' for the noisy classifier (its "
                        f"log-normal noise levels), got {d.parameterization!r}")  # fmt: skip
    net = replace(cfg.eval.classifier, noise_conditioned=True, image_size=size)
    noise = {"p_mean": d.p_mean, "p_std": d.p_std, "sigma_data": d.sigma_data}
    return Prepared({"net": to_dict(net), "noise": noise}, tensors, ClassifierTask(noise=True, **noise))


def _build_classifier(meta: dict[str, Any]) -> Classifier:
    return Classifier(from_dict(ClassifierConfig, meta["net"]))


register(StageKind(
    name="classifier", summary="the evaluation classifier (FID features, class histograms; needs labels)",
    train_path="eval.classifier_train", prepare=_prepare_classifier, build=_build_classifier,
    init_stream=0xC1, role="classifier", resolve=_resolve_classifier,
))  # fmt: skip
register(StageKind(
    name="noisy-classifier", summary="a noise-aware classifier p(label | x, sigma) for classifier guidance",
    train_path="eval.classifier_train", prepare=_prepare_noisy, build=_build_classifier, init_stream=0xC6,
    directory=NOISY_DIR, role="classifier",
), aliases=("noisy_classifier",))  # fmt: skip


def load_noisy_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, float]:
    """A run's noise-aware classifier for guidance, frozen, and the sigma_data its input scaling used.

    Args:
        path: the run directory, its noisy_classifier directory, or that directory's weights file.
        device: where the classifier runs.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        path = path.parent
    elif (path / NOISY_DIR).is_dir() or (path / "config.json").is_file():
        path = path / NOISY_DIR
    if not (path / META).is_file():
        raise VcdmError(f"{path}: no noisy classifier; train one with `vcdm train noisy-classifier RUN`")
    model, meta = load_model(path, "noisy-classifier")
    return model.to(device), float(meta["noise"]["sigma_data"])
