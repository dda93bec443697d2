"""Training losses in the denoiser contract: the EDM / VCDM loss and the classic DDPM epsilon loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vcdm.diffusion.precond import EpsPrecond, _expand

Denoiser = Callable[[Tensor, Tensor, "dict[str, Tensor] | None"], Tensor]


def _randn(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=generator, device=generator.device)


def edm_sigma_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Karras et al. 2022, Table 1)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_loss(
    denoiser: Denoiser,
    x0: Tensor,
    cond: dict[str, Tensor] | None,
    generator: torch.Generator,
    *,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    weighting: str = "edm",
) -> Tensor:
    """Per-sample denoising loss, VCDM Eq. 1: lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2.

    ln(sigma) ~ N(p_mean, p_std^2). weighting "edm" uses lambda(sigma) above (unit effective weight at
    every sigma for an EDM-preconditioned network); "uniform" uses lambda = 1 (the x0-predicting prior).

    Args:
        x0: clean data (B, ...) float32. cond: conditioning dict or None. generator: source of sigma and n.
    Returns:
        (B,) float32: the mean over non-batch dimensions of the weighted squared error.
    """
    b = x0.shape[0]
    sigma = (p_mean + p_std * _randn((b,), generator)).exp()
    noise = _randn(tuple(x0.shape), generator)
    denoised = denoiser(x0 + _expand(sigma, x0) * noise, sigma, cond)
    err = (denoised - x0).square().flatten(1).mean(1)
    if weighting == "edm":
        return edm_sigma_weight(sigma, sigma_data) * err
    return err


def ddpm_loss(
    model: EpsPrecond, x0: Tensor, cond: dict[str, Tensor] | None, generator: torch.Generator
) -> Tensor:
    """The simple DDPM loss (Ho et al. 2020, Algorithm 1): ||n - eps(sqrt(ab) x0 + sqrt(1 - ab) n, t)||^2.

    Returns (B,) per-sample mean squared errors.
    """
    sched = model.schedule
    b = x0.shape[0]
    t = torch.randint(0, sched.num_timesteps, (b,), generator=generator, device=generator.device)
    ab = _expand(sched.alpha_bar[t].float(), x0)
    noise = _randn(tuple(x0.shape), generator)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    return (model.eps(x_t, t, cond) - noise).square().flatten(1).mean(1)
