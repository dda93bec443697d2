"""DDIM with eta and DDPM ancestral sampling, written in VE coordinates (x = x0 + sigma n)."""

from __future__ import annotations

import torch
from torch import Tensor

from vcdm.samplers.common import SamplerRun, sampler, to_d


def ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """(sigma_down, sigma_up) for one DDIM step with stochasticity eta, in the levels' dtype.

    Song et al. 2021 (DDIM, Eq. 16) rewritten in VE units: sigma_up = eta sqrt(s'^2 (s^2 - s'^2) / s^2),
    sigma_down = sqrt(s'^2 - sigma_up^2). eta = 1 is the DDPM posterior variance (Ho et al., Algorithm 2).
    Computed in at least float32: in float16 the fourth powers overflow from sigma ~ 16.
    """
    dtype = sigma_from.dtype
    sigma_from, sigma_to = (s.to(torch.promote_types(dtype, torch.float32)) for s in (sigma_from, sigma_to))
    sigma_up = (eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).sqrt()).clamp(
        max=sigma_to
    )
    sigma_down = (sigma_to**2 - sigma_up**2).clamp(min=0).sqrt()
    return sigma_down.to(dtype), sigma_up.to(dtype)


def ancestral_loop(run: SamplerRun, eta: float) -> Tensor:
    """DDIM's update x' = x0_hat + sigma_down eps_hat + sigma_up n on every step of the run."""

    def step(i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        denoised = run.denoise(x, sigma, i)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        x = denoised + sigma_down * to_d(x, sigma, denoised)
        return x + sigma_up * run.randn_like(x) if sigma_up > 0 else x

    return run.loop(step)


@sampler
def ddim(run: SamplerRun, *, eta: float = 0.0) -> Tensor:
    """DDIM (Song et al. 2021): x' = x0_hat + sigma_down eps_hat + sigma_up n (see `ancestral_step`).

    eta = 0 is deterministic and equals Euler on the same grid; eta = 1 is DDPM ancestral sampling.
    Fresh noise comes from `generator` (one, or one per sample).
    """
    return ancestral_loop(run, eta)


@sampler
def ddpm(run: SamplerRun) -> Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on any grid: DDIM with eta = 1."""
    return ancestral_loop(run, 1.0)
