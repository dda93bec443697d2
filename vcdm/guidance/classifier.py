"""Classifier guidance (Dhariwal & Nichol 2021) with a noise-aware classifier p(a | x, sigma).

The classifier is the stage kind "noisy-classifier" (vcdm.stages.classifier: training, export, loading)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vcdm.errors import VcdmError
from vcdm.guidance.compose import in_sigma_range, shift_by_gradient
from vcdm.networks.classifier import classifier_input
from vcdm.samplers.common import Denoiser

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
