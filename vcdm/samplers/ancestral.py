"""DDIM with eta and DDPM ancestral sampling, written in VE coordinates (x = x0 + sigma n)."""

from __future__ import annotations

import torch
from torch import Tensor

from vcdm.samplers.common import (
    Callback,
    Correct,
    Denoiser,
    Generator,
    apply_correct,
    batch_sigma,
    check_sigmas,
    notify,
    randn_like,
    to_d,
)


def ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """(sigma_down, sigma_up) for one DDIM step with stochasticity eta.

    Song et al. 2021 (DDIM, Eq. 16) rewritten in VE units: sigma_up = eta sqrt(s'^2 (s^2 - s'^2) / s^2),
    sigma_down = sqrt(s'^2 - sigma_up^2). eta = 1 is the DDPM posterior variance (Ho et al., Algorithm 2).
    """
    sigma_up = (eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).sqrt()).clamp(
        max=sigma_to
    )
    sigma_down = (sigma_to**2 - sigma_up**2).clamp(min=0).sqrt()
    return sigma_down, sigma_up


@torch.no_grad()
def ddim(
    denoiser: Denoiser,
    noise: Tensor,
    sigmas: Tensor,
    cond: dict[str, Tensor] | None = None,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    correct: Correct | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021): x' = x0_hat + sigma_down eps_hat + sigma_up n.

    eta = 0 is deterministic and equals Euler on the same grid; eta = 1 is DDPM ancestral sampling.
    Fresh noise comes from `generator` (one, or one per sample). `correct(x, i, sigma_next)`, if given,
    replaces the sample after each step (e.g. ILVR, vcdm.editing).
    """
    sigmas = check_sigmas(sigmas).to(noise.device)
    x = noise.float() * sigmas[0]
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, batch_sigma(sigmas[i], x), cond)
        notify(callback, i, x, sigmas[i], denoised)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = denoised + sigma_down * to_d(x, sigmas[i], denoised)
        if sigma_up > 0:
            x = x + sigma_up * randn_like(x, generator)
        x = apply_correct(correct, x, i, sigmas[i + 1])
    return x


@torch.no_grad()
def ddpm(
    denoiser: Denoiser,
    noise: Tensor,
    sigmas: Tensor,
    cond: dict[str, Tensor] | None = None,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    correct: Correct | None = None,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on any grid: DDIM with eta = 1."""
    return ddim(
        denoiser, noise, sigmas, cond, generator=generator, callback=callback, correct=correct, eta=1.0
    )
