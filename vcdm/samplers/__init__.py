"""Stateless samplers, one signature: (denoiser, noise, sigmas, cond, *, generator, callback, correct,
**options); see vcdm.samplers.common for it and for the denoiser contract. Each computes in its noise's dtype.

SAMPLERS (and SAMPLER_NAMES, its keys) is the one list of sampler names in the package.
"""

from vcdm.samplers.ancestral import ddim, ddpm
from vcdm.samplers.common import randn_like, seeded_noise
from vcdm.samplers.dpmpp import dpmpp_2m, dpmpp_2m_sde
from vcdm.samplers.inversion import ddim_invert
from vcdm.samplers.ode import euler, heun

SAMPLERS = {
    "ddpm": ddpm,
    "ddim": ddim,
    "euler": euler,
    "heun": heun,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
}
SAMPLER_NAMES = tuple(SAMPLERS)

__all__ = [
    "SAMPLERS",
    "SAMPLER_NAMES",
    "ddim",
    "ddim_invert",
    "ddpm",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "euler",
    "heun",
    "randn_like",
    "seeded_noise",
]
