"""Deterministic DDIM inversion: image -> the noise that DDIM (eta = 0) decodes back to it."""

from __future__ import annotations

import torch
from torch import Tensor

from vcdm.samplers.common import Callback, Denoiser, SamplerRun, to_d


@torch.no_grad()
def ddim_invert(
    denoiser: Denoiser,
    x0: Tensor,
    sigmas: Tensor,
    cond: dict[str, Tensor] | None = None,
    *,
    callback: Callback | None = None,
    fixed_point_iters: int = 0,
) -> Tensor:
    """Run the DDIM / Euler update from sigma = 0 up the grid (Song et al. 2021, Sec. 4.3), in x0's dtype.

    Plain inversion (fixed_point_iters = 0) evaluates the ODE derivative at the current level (at sigma = 0,
    at the first nonzero level), so it is first order: the reconstruction error of
    `ddim(denoiser, z, sigmas, cond)` shrinks like 1/N. With fixed_point_iters = k > 0 each step is refined
    by k fixed-point iterations of x' = x - (sigma_cur - sigma_next) d(x', sigma_next), which makes it the
    exact inverse of the decoding Euler step when they converge (Pan et al. 2023, "Effective real image
    editing with accelerated iterative diffusion inversion"); each iteration costs one denoiser call.

    Args:
        x0: clean images (B, ...). sigmas: the same decreasing grid ending in 0 that decoding will use.
    Returns:
        unit-scale noise z (B, ...) (the sample at sigmas[0], divided by sigmas[0]).
    """
    run = SamplerRun(denoiser, x0, sigmas, cond, callback=callback)
    sigmas, n = run.sigmas, run.num_steps
    x = x0
    for j, i in enumerate(range(n - 1, -1, -1)):
        sigma_cur, sigma_next = sigmas[i + 1], sigmas[i]
        sigma_eval = sigma_cur if sigma_cur > 0 else sigmas[n - 1]
        x_next = x + (sigma_next - sigma_cur) * to_d(x, sigma_eval, run.denoise(x, sigma_eval, j))
        for _ in range(fixed_point_iters):
            d_next = to_d(x_next, sigma_next, run.denoise(x_next, sigma_next))
            x_next = x + (sigma_next - sigma_cur) * d_next
        x = x_next
    return x / sigmas[0]
