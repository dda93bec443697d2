"""Pure diffusion math: noise grids, preconditioning (the denoiser contract) and losses."""

from vcdm.diffusion.loss import ddpm_loss, edm_loss, edm_sigma_weight
from vcdm.diffusion.precond import EDMPrecond, EpsPrecond, ResidualDenoiser, edm_coefficients
from vcdm.diffusion.schedules import DDPMSchedule, ddpm_betas, karras_sigmas

__all__ = [
    "DDPMSchedule",
    "EDMPrecond",
    "EpsPrecond",
    "ResidualDenoiser",
    "ddpm_betas",
    "ddpm_loss",
    "edm_coefficients",
    "edm_loss",
    "edm_sigma_weight",
    "karras_sigmas",
]
