"""Stateless samplers, one signature: (denoiser, noise, sigmas, cond, *, generator, callback, **options)."""

from vcdm.samplers.ancestral import ddim, ddpm
from vcdm.samplers.common import randn_like, seeded_noise
from vcdm.samplers.inversion import ddim_invert
from vcdm.samplers.ode import euler, heun

SAMPLERS = {"ddpm": ddpm, "ddim": ddim, "euler": euler, "heun": heun}

__all__ = ["SAMPLERS", "ddim", "ddim_invert", "ddpm", "euler", "heun", "randn_like", "seeded_noise"]
