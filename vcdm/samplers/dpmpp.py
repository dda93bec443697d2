"""DPM-Solver++(2M) and its SDE variant (Lu et al. 2022, "DPM-Solver++", Algorithm 2), in VE coordinates.

With alpha = 1 and lambda = -log sigma, a step from sigma to sigma' < sigma has h = log(sigma / sigma') > 0,
and the data-prediction update with stochasticity eta is

    x' = (sigma' / sigma) e^(-eta h) x + (1 - e^(-(1 + eta) h)) D + sigma' sqrt(1 - e^(-2 eta h)) n.

eta = 0 is the probability-flow ODE (the first-order step equals Euler / DDIM); eta = 1 is the SDE step,
which is DDPM's posterior sample. The 2M multistep method uses D = x0_hat on the first step and
D = x0_hat + (x0_hat - x0_hat_prev) / (2 r), r = h_prev / h, after it (the "midpoint" form for the SDE, as
in k-diffusion's sample_dpmpp_2m_sde). The last step, to sigma = 0 (lambda = infinity), returns x0_hat.
"""

from __future__ import annotations

from torch import Tensor

from vcdm.samplers.common import SamplerRun, sampler


def multistep_loop(run: SamplerRun, eta: float, s_noise: float = 1.0) -> Tensor:
    """DPM-Solver++(2M) with SDE noise scaled by eta (0: the ODE solver) and s_noise, over the run."""
    previous: tuple[Tensor, Tensor] | None = None  # (x0_hat, h) of the step before

    def step(i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        nonlocal previous
        denoised = run.denoise(x, sigma, i)
        if sigma_next == 0:
            return denoised
        h = (sigma / sigma_next).log()  # log of the ratio: precise in bf16, unlike log - log
        d = denoised
        if previous is not None and run.continues(i):
            d = denoised + (denoised - previous[0]) * (h / (2 * previous[1]))
        previous = denoised, h
        x = (sigma_next / sigma) * (-eta * h).exp() * x - (-(1 + eta) * h).expm1() * d
        if eta > 0:
            noise_std = s_noise * sigma_next * (-(-2 * eta * h).expm1()).sqrt()
            x = x + noise_std * run.randn_like(x)
        return x

    return run.loop(step)


@sampler
def dpmpp_2m(run: SamplerRun) -> Tensor:
    """DPM-Solver++(2M): deterministic, second order in lambda = -log sigma, one denoiser call per step."""
    return multistep_loop(run, 0.0)


@sampler
def dpmpp_2m_sde(run: SamplerRun, *, eta: float = 1.0, s_noise: float = 1.0) -> Tensor:
    """SDE-DPM-Solver++(2M): the 2M step plus fresh noise (from `generator`); eta = 1 is the reverse SDE,
    eta = 0 the ODE (dpmpp_2m). s_noise scales the added noise, drawn independently at each step (where
    k-diffusion defaults to a Brownian tree; the two have the same distribution)."""
    return multistep_loop(run, eta, s_noise)
