"""EDM's deterministic solvers: Euler and Heun (Karras et al. 2022, Algorithm 2 with optional churn)."""

from __future__ import annotations

import math

from torch import Tensor

from vcdm.samplers.common import SamplerRun, sampler, to_d


@sampler
def euler(run: SamplerRun) -> Tensor:
    """First-order Euler integration of the probability-flow ODE; identical to DDIM with eta = 0.

    Deterministic: `generator` is accepted for the shared signature and unused.
    """

    def step(i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        return x + (sigma_next - sigma) * to_d(x, sigma, run.denoise(x, sigma, i))

    return run.loop(step)


@sampler
def heun(
    run: SamplerRun,
    *,
    s_churn: float = 0.0,
    s_min: float = 0.0,
    s_max: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """EDM's stochastic second-order sampler (Karras et al. 2022, Algorithm 2).

    With s_churn = 0 it is the deterministic Heun solver. Otherwise, for sigma_i in [s_min, s_max], the
    level is first raised to sigma_hat = sigma_i (1 + gamma), gamma = min(s_churn / N, sqrt(2) - 1), by
    adding fresh noise of std s_noise * sqrt(sigma_hat^2 - sigma_i^2) (drawn from `generator`); the
    callback sees that raised sample and level. The last step (to sigma = 0) is a plain Euler step.
    """
    gamma_max = min(s_churn / run.num_steps, math.sqrt(2) - 1)

    def step(i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        gamma = gamma_max if s_min <= float(sigma) <= s_max else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + run.randn_like(x) * s_noise * (sigma_hat**2 - sigma**2).sqrt()
        d = to_d(x, sigma_hat, run.denoise(x, sigma_hat, i))
        x_next = x + (sigma_next - sigma_hat) * d
        if sigma_next > 0:
            d_next = to_d(x_next, sigma_next, run.denoise(x_next, sigma_next))
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        return x_next

    return run.loop(step)
