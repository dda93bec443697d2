"""EDM's deterministic solvers: Euler and Heun (Karras et al. 2022, Algorithm 2 with optional churn)."""

from __future__ import annotations

import math

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


@torch.no_grad()
def euler(
    denoiser: Denoiser,
    noise: Tensor,
    sigmas: Tensor,
    cond: dict[str, Tensor] | None = None,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    correct: Correct | None = None,
) -> Tensor:
    """First-order Euler integration of the probability-flow ODE; identical to DDIM with eta = 0.

    Args:
        denoiser: D(x, sigma, cond) -> x0_hat.
        noise: unit Gaussian (B, ...); scaled here by sigmas[0].
        sigmas: decreasing grid ending in 0 (e.g. `karras_sigmas`).
        generator: unused (deterministic), accepted for the shared signature.
        correct: optional correct(x, i, sigma_next) -> x applied after each step (e.g. ILVR).
    Returns:
        the sample at sigma = 0, float32 (B, ...).
    """
    sigmas = check_sigmas(sigmas).to(noise.device)
    x = noise.float() * sigmas[0]
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, batch_sigma(sigmas[i], x), cond)
        notify(callback, i, x, sigmas[i], denoised)
        x = x + (sigmas[i + 1] - sigmas[i]) * to_d(x, sigmas[i], denoised)
        x = apply_correct(correct, x, i, sigmas[i + 1])
    return x


@torch.no_grad()
def heun(
    denoiser: Denoiser,
    noise: Tensor,
    sigmas: Tensor,
    cond: dict[str, Tensor] | None = None,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    correct: Correct | None = None,
    s_churn: float = 0.0,
    s_min: float = 0.0,
    s_max: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """EDM's stochastic second-order sampler (Karras et al. 2022, Algorithm 2).

    With s_churn = 0 it is the deterministic Heun solver. Otherwise, for sigma_i in [s_min, s_max], the
    level is first raised to sigma_hat = sigma_i (1 + gamma), gamma = min(s_churn / N, sqrt(2) - 1), by
    adding fresh noise of std s_noise * sqrt(sigma_hat^2 - sigma_i^2) (drawn from `generator`).
    The last step (to sigma = 0) is a plain Euler step. `correct(x, i, sigma_next)`, if given, replaces the
    sample after each step (e.g. ILVR, vcdm.editing).
    """
    sigmas = check_sigmas(sigmas).to(noise.device)
    n = len(sigmas) - 1
    x = noise.float() * sigmas[0]
    for i in range(n):
        sigma = sigmas[i]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_min <= float(sigma) <= s_max else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + randn_like(x, generator) * s_noise * (sigma_hat**2 - sigma**2).sqrt()
        denoised = denoiser(x, batch_sigma(sigma_hat, x), cond)
        notify(callback, i, x, sigma_hat, denoised)
        d = to_d(x, sigma_hat, denoised)
        x_next = x + (sigmas[i + 1] - sigma_hat) * d
        if sigmas[i + 1] > 0:
            d_next = to_d(x_next, sigmas[i + 1], denoiser(x_next, batch_sigma(sigmas[i + 1], x), cond))
            x_next = x + (sigmas[i + 1] - sigma_hat) * (d + d_next) / 2
        x = apply_correct(correct, x_next, i, sigmas[i + 1])
    return x
