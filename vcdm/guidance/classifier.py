"""Classifier guidance (Dhariwal & Nichol 2021) with a noise-aware classifier p(a | x, sigma), and the
training, export and loading of that classifier (RUN/noisy_classifier)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from vcdm.config import RunConfig, to_dict
from vcdm.data import ImageData
from vcdm.errors import VcdmError
from vcdm.eval.classifier import (
    Classifier,
    ClassifierTask,
    classifier_input,
    load_classifier,
    save_classifier,
)
from vcdm.fileio import atomic_write_text
from vcdm.guidance.compose import in_sigma_range, shift_by_gradient
from vcdm.samplers.common import Denoiser
from vcdm.training import TrainResult, train
from vcdm.training import distributed as dist
from vcdm.training.loop import mix_seed

STAGE_DIR = "noisy_classifier"  # RUN/noisy_classifier holds the trained classifier
WEIGHTS = "model.safetensors"  # save_classifier's file: weights + architecture in its metadata
META = "model.json"  # kind, sigma distribution, images seen (read by vcdm.runs.stage_done)

# labels: one class for every sample (int), one per sample ((B,) int64), None (take cond["label"]), or a
# function (cond, batch size) -> (B,) int64.
Labels = int | Tensor | Callable[[dict[str, Tensor] | None, int], Tensor] | None


def resolve_labels(
    labels: Labels, cond: dict[str, Tensor] | None, batch: int, device: torch.device
) -> Tensor:
    """The (B,) int64 class of every sample in a batch from the forms `Labels` allows."""
    if callable(labels):
        labels = labels(cond, batch)
    if labels is None:
        if cond is None or "label" not in cond:
            raise VcdmError("classifier guidance: no labels given and the conditioning has no 'label'")
        labels = cond["label"]
    t = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if len(t) != batch:
        raise VcdmError(f"classifier guidance: got {len(t)} labels for a batch of {batch}")
    return t


def classifier_log_prob_grad(
    classifier: nn.Module, x: Tensor, sigma: Tensor, labels: Tensor, *, sigma_data: float = 0.5
) -> tuple[Tensor, Tensor]:
    """log p(a | x, sigma) of a noise-conditioned classifier and its gradient w.r.t. the noisy x.

    Runs with gradients enabled (samplers run under no_grad) and without autocast, in x's dtype.

    Args:
        classifier: a Classifier built with noise_conditioned=True, in eval mode.
        x: (B, C, H, W) noisy images x0 + sigma n (VE coordinates).
        sigma: (B,) or scalar noise levels > 0.
        labels: (B,) int64 classes a.
        sigma_data: the data std the classifier was trained with (its input is c_in x).
    Returns:
        (log_prob (B,), grad (B, C, H, W)), both detached, in x's dtype.
    """
    sigma = sigma.to(x.device, x.dtype).reshape(-1).expand(x.shape[0])
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        xg = x.detach().requires_grad_(True)
        x_in, c_noise = classifier_input(xg, sigma, sigma_data)
        log_probs = classifier(x_in, c_noise).to(x.dtype).log_softmax(dim=1)  # (B, num_classes)
        selected = log_probs.gather(1, labels.reshape(-1, 1).to(x.device)).squeeze(1)  # (B,)
        # Samples do not interact in the classifier (per-sample GroupNorm), so the gradient of the sum
        # is each sample's own gradient.
        (grad,) = torch.autograd.grad(selected.sum(), xg)
    return selected.detach(), grad


def classifier_guidance(
    denoiser: Denoiser,
    classifier: nn.Module,
    labels: Labels,
    scale: float,
    *,
    sigma_data: float = 0.5,
    sigma_range: tuple[float, float] | None = None,
) -> Denoiser:
    """D_s(x, sigma) = D(x, sigma) + s sigma^2 grad_x log p(a | x, sigma) (Dhariwal & Nichol 2021, Alg. 1).

    Args:
        denoiser: any denoiser (conditional, unconditional, or already classifier-free guided).
        classifier: noise-conditioned Classifier (see `load_noisy_classifier`), on the samples' device.
        labels: the requested class a: an int for every sample, a (B,) int64 tensor, None to read
            cond["label"], or a function (cond, batch size) -> (B,) int64.
        scale: s >= 0. s = 0 returns `denoiser` itself; s = 1 samples p(x | a) if the classifier is exact.
        sigma_data: the data std the classifier's input scaling was trained with.
        sigma_range: (lo, hi): guide only for sigma in [lo, hi]; elsewhere D is used alone.
    Returns:
        a denoiser with the same contract.
    """
    if scale < 0:
        raise VcdmError(f"classifier guidance scale must be >= 0, got {scale}")
    if scale == 0:
        return denoiser
    cfg = getattr(classifier, "cfg", None)
    if cfg is not None and not cfg.noise_conditioned:
        raise VcdmError("classifier guidance needs a noise-conditioned classifier (noise_conditioned=True)")

    def guided(x: Tensor, sigma: Tensor, cond: dict[str, Tensor] | None) -> Tensor:
        denoised = denoiser(x, sigma, cond)
        if not in_sigma_range(sigma, sigma_range):
            return denoised
        a = resolve_labels(labels, cond, x.shape[0], x.device)
        _, grad = classifier_log_prob_grad(classifier, x.float(), sigma, a, sigma_data=sigma_data)
        return shift_by_gradient(denoised, sigma, grad, scale)

    return guided


# ---- the noise-aware classifier of a run: RUN/noisy_classifier ----


def train_noisy_classifier(
    run_dir: str | Path, cfg: RunConfig, data: ImageData, *, progress: bool = True
) -> TrainResult:
    """Train p(a | x, sigma) for classifier guidance into run_dir/noisy_classifier and export it.

    The architecture is cfg.eval.classifier with noise_conditioned=True (image size, channels and classes
    from the data); noise levels follow the image decoder's training distribution cfg.decoder.diffusion
    (ln sigma ~ N(p_mean, p_std^2), c_in from sigma_data); the budget is cfg.eval.classifier_train.
    Resumes from run_dir/noisy_classifier/checkpoints like every stage.

    Args:
        run_dir: the run directory.
        cfg: the run config.
        data: a labelled dataset (uint8 images).
        progress: show a progress bar.
    Returns:
        the TrainResult (its .ema is the exported classifier).
    """
    if data.labels is None:
        raise VcdmError(
            f"{data.source}: the noisy classifier needs class labels (class subfolders or npz labels)"
        )
    if cfg.decoder.diffusion.parameterization != "edm":
        kind = cfg.decoder.diffusion.parameterization
        raise VcdmError(f"decoder.diffusion.parameterization must be 'edm' for the noisy classifier (its "
                        f"log-normal noise levels), got {kind!r}")  # fmt: skip
    _, c, h, _ = data.images.shape
    net = replace(cfg.eval.classifier, image_size=h, in_channels=c, num_classes=data.num_classes,
                  noise_conditioned=True)  # fmt: skip
    d = cfg.decoder.diffusion
    noise = {"p_mean": d.p_mean, "p_std": d.p_std, "sigma_data": d.sigma_data}
    meta = {"kind": "noisy_classifier", "net": to_dict(net), "noise": noise}
    train_cfg = cfg.eval.classifier_train
    with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only
        torch.manual_seed(mix_seed(train_cfg.seed, 0xC6))
        model = Classifier(net)
    out = Path(run_dir) / STAGE_DIR
    task = ClassifierTask(noise=True, **noise)
    res = train(model, task, {"image": data.images, "label": data.labels}, train_cfg, out, meta=meta,
                progress=progress, desc="noisy classifier")  # fmt: skip
    if dist.rank() == 0:
        save_classifier(res.ema, out / WEIGHTS)
        atomic_write_text(out / META, json.dumps(meta | {"nimg": res.nimg, "seconds": res.seconds}, indent=2))
    dist.barrier()
    return res


def _stage_dir(path: str | Path) -> Path:
    path = Path(path)
    return path.parent if path.suffix == ".safetensors" else path


def load_noisy_classifier(path: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Load a noise-conditioned classifier for guidance, frozen and in eval mode.

    Args:
        path: RUN/noisy_classifier (the directory `train_noisy_classifier` writes) or its weights file.
        device: where the classifier runs.
    """
    weights = Path(path) / WEIGHTS if Path(path).is_dir() else Path(path)
    if not weights.is_file():
        raise VcdmError(f"{weights}: no noisy classifier; train one with `vcdm train noisy-classifier RUN`")
    model = load_classifier(weights, device)
    if not model.cfg.noise_conditioned:
        raise VcdmError(f"{weights}: a plain classifier; classifier guidance needs a noise-conditioned one")
    return model.requires_grad_(False)


def noisy_classifier_sigma_data(path: str | Path) -> float:
    """The sigma_data a run's noisy classifier was trained with (its model.json), for classifier_guidance."""
    meta_path = _stage_dir(path) / META
    try:
        return float(json.loads(meta_path.read_text())["noise"]["sigma_data"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise VcdmError(f"{meta_path}: missing or unreadable ({e}); retrain the noisy classifier") from None
