"""Noise-level grids and the DDPM beta schedules, in VE coordinates (x = x0 + sigma * n).

Everything here is pure tensor math on float64 grids, returned as float32 unless noted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vcdm.errors import VcdmError

BETA_SCHEDULES = ("linear", "cosine")


def _append_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """The EDM sampling grid (Karras et al. 2022, Eq. 5), decreasing, with a final 0 appended.

    Args:
        num_steps: number of denoising steps N >= 1 (the grid has N + 1 entries).
        sigma_min, sigma_max: the smallest and largest nonzero noise levels, 0 < sigma_min <= sigma_max.
        rho: the warping exponent; 7 for images.
    Returns:
        float32 tensor (N + 1,): sigma_max, ..., sigma_min, 0.
    """
    if num_steps < 1:
        raise VcdmError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min <= sigma_max:
        raise VcdmError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if num_steps == 1:
        return _append_zero(torch.tensor([sigma_max], dtype=torch.float64)).float()
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho).float()


def ddpm_betas(schedule: str = "linear", num_timesteps: int = 1000) -> Tensor:
    """DDPM noise schedule beta_t, t = 1..T, as float64 (T,).

    "linear": Ho et al. 2020, beta from 1e-4 to 0.02 (scaled for T != 1000 as in improved DDPM).
    "cosine": Nichol & Dhariwal 2021, Eq. 17, alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2), s = 0.008,
    betas clipped at 0.999.
    """
    if schedule not in BETA_SCHEDULES:
        raise VcdmError(f"beta schedule must be one of {BETA_SCHEDULES}, got {schedule!r}")
    if num_timesteps < 2:
        raise VcdmError(f"num_timesteps must be >= 2, got {num_timesteps}")
    if schedule == "linear":
        scale = 1000 / num_timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)
    s = 0.008
    t = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


class DDPMSchedule:
    """A discrete DDPM schedule seen in VE coordinates: sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t).

    Timestep index t = 0..T-1 (0 is the least noisy). `t_of_sigma` interpolates linearly in log sigma
    between the discrete levels, giving the fractional timestep fed to an epsilon network.
    """

    def __init__(self, schedule: str = "linear", num_timesteps: int = 1000):
        self.schedule = schedule
        self.num_timesteps = num_timesteps
        betas = ddpm_betas(schedule, num_timesteps)
        self.alpha_bar = torch.cumprod(1 - betas, dim=0)  # (T,) float64
        self.sigmas = ((1 - self.alpha_bar) / self.alpha_bar).sqrt()  # increasing in t
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_of_t(self, t: Tensor) -> Tensor:
        """Noise level at (possibly fractional) timesteps t in [0, T-1]; float32 like t's shape."""
        t = t.double().clamp(0, self.num_timesteps - 1)
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=self.num_timesteps - 1)
        w = t - lo
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp().float()

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        """Fractional timestep whose sigma equals `sigma` (clamped to the schedule's range); float32."""
        log_sigma = sigma.double().log().clamp(self.log_sigmas[0], self.log_sigmas[-1])
        hi = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, self.num_timesteps - 1)
        lo = hi - 1
        w = (log_sigma - self.log_sigmas[lo]) / (self.log_sigmas[hi] - self.log_sigmas[lo])
        return (lo + w).float()

    def sigmas_for_sampling(self, num_steps: int) -> Tensor:
        """A respaced grid of `num_steps` evenly spaced timesteps from T-1 down to 0, then 0 (decreasing)."""
        if not 1 <= num_steps <= self.num_timesteps:
            raise VcdmError(f"num_steps must be in [1, {self.num_timesteps}], got {num_steps}")
        t = torch.linspace(self.num_timesteps - 1, 0, num_steps, dtype=torch.float64).round().long()
        return _append_zero(self.sigmas[t]).float()
