"""Adapters that turn a raw network into a denoiser D(x, sigma, cond) -> x0_hat (VE coordinates).

Every sampler, loss and guidance function sees only this contract, whatever the network predicts; they
honour its dtype rule (vcdm.samplers.common): x0_hat comes back in x's dtype. The network itself is fed
float32, as it always was; the preconditioning around it runs in float32, or in float64 for float64 x.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vcdm.diffusion.schedules import DDPMSchedule
from vcdm.errors import VcdmError

PRECOND_KINDS = ("edm", "x0")


def edm_coefficients(
    sigma: Tensor, sigma_data: float, kind: str = "edm"
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM preconditioning (Karras et al. 2022, Table 1): (c_skip, c_out, c_in, c_noise) for each sigma.

    kind "x0" is plain clean-data prediction (the VCDM prior): c_skip = 0, c_out = 1, same c_in, c_noise.
    """
    if kind not in PRECOND_KINDS:
        raise VcdmError(f"precond kind must be one of {PRECOND_KINDS}, got {kind!r}")
    sd2 = sigma_data**2
    c_in = 1 / (sigma**2 + sd2).sqrt()
    c_noise = sigma.log() / 4
    if kind == "x0":
        return torch.zeros_like(sigma), torch.ones_like(sigma), c_in, c_noise
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * sigma_data / (sigma**2 + sd2).sqrt()
    return c_skip, c_out, c_in, c_noise


def _expand(c: Tensor, x: Tensor) -> Tensor:
    return c.reshape(-1, *([1] * (x.ndim - 1)))


def _inputs(x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """x and sigma (as (B,)) in the preconditioning's dtype: float32, or float64 for float64 x."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    return x.to(dtype), sigma.to(dtype).reshape(-1).expand(x.shape[0])


class EDMPrecond(nn.Module):
    """D(x, sigma) = c_skip x + c_out F(c_in x, c_noise, cond) around a raw network F.

    Args:
        net: called as net(x_in, c_noise, cond) -> tensor of x's shape.
        sigma_data: standard deviation of the data (0.5 for images in [-1, 1]; 1 for standardised embeddings).
        kind: "edm" (EDM's mixed skip) or "x0" (the network predicts x0 directly).
    """

    def __init__(self, net: nn.Module | Callable, sigma_data: float = 0.5, kind: str = "edm"):
        super().__init__()
        if kind not in PRECOND_KINDS:
            raise VcdmError(f"precond kind must be one of {PRECOND_KINDS}, got {kind!r}")
        self.net = net
        self.sigma_data = float(sigma_data)
        self.kind = kind

    def forward(self, x: Tensor, sigma: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        """x0_hat (B, ...) in x's dtype for x (B, ...) and sigma (B,) or a scalar."""
        xp, sigma = _inputs(x, sigma)
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data, self.kind)
        f = self.net((_expand(c_in, xp) * xp).float(), c_noise.float(), cond).to(xp.dtype)
        return (_expand(c_skip, xp) * xp + _expand(c_out, xp) * f).to(x.dtype)


class EpsPrecond(nn.Module):
    """The DDPM epsilon parameterisation (Ho et al. 2020) as a denoiser.

    The network sees VP inputs x_vp = x / sqrt(1 + sigma^2) and the fractional timestep t(sigma), and
    predicts the noise: D(x, sigma) = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma)).
    """

    def __init__(self, net: nn.Module, schedule: DDPMSchedule):
        super().__init__()
        self.net = net
        self.schedule = schedule

    def eps(self, x_vp: Tensor, t: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        """The raw epsilon prediction for VP inputs at timesteps t (B,)."""
        return self.net(x_vp, t.float(), cond).float()

    def forward(self, x: Tensor, sigma: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        """x0_hat (B, ...) in x's dtype for x (B, ...) and sigma (B,) or a scalar."""
        xp, sigma = _inputs(x, sigma)
        s = _expand(sigma, xp)
        eps = self.eps((xp / (1 + s**2).sqrt()).float(), self.schedule.t_of_sigma(sigma), cond)
        return (xp - s * eps.to(xp.dtype)).to(x.dtype)


class ResidualDenoiser(nn.Module):
    """Diffusion of the residual r = x - b over a base image b given in cond["base"] (SRDiff, Li et al. 2022; an
    upsampler's b is the bicubic-upsampled low-res image): D(x, sigma, cond) = b + D_r(x - b, sigma, cond).

    The state the samplers move stays x = b + r, so the ODE (x - D(x)) / sigma is the residual's and nothing
    downstream changes; only the start differs (sigma_max n instead of b + sigma_max n: |b| <= 1 against noise of
    std sigma_max, 20 for the emoji preset, which the first steps wash out). In training the same wrapper turns
    the EDM denoising loss on x into the loss on r (EDM preconditioning only: the eps loss reads the network
    directly, and config refuses the pair). The inner denoiser's sigma_data should be the residual's std (about
    0.09 for 32 -> 64 emoji), not the image's.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor, sigma: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        base = None if cond is None else cond.get("base")
        if base is None or base.shape != x.shape:
            got = None if base is None else tuple(base.shape)
            raise VcdmError(f"cond['base']: a residual denoiser needs the base image, shape {tuple(x.shape)}, "
                            f"got {got}")  # fmt: skip
        base = base.to(x.dtype)
        return base + self.inner(x - base, sigma, cond)
