"""RePaint (Lugmayr et al. 2022): inpainting with any denoiser, by replacing the known region with the original
noised to the current level after every step, and resampling (jumping back up the grid and redoing the steps)
so that the generated region has time to agree with the known one.

Both parts sit on the shared samplers rather than in a loop of their own (vcdm.samplers.common): the
replacement is a `correct` hook,

    x <- m * x + (1 - m) * (x_known + sigma_{i+1} n),   n fresh from known_generator,  m = 1 where to fill,

and the resampling schedule is a `walk` over the grid: down `jump_length` steps, back up `jump_length` (a
forward re-noising x + sqrt(sigma'^2 - sigma^2) n), `resamplings - 1` times at each such point. Written on
sigma grids, it works with every sampler and with the EDM (Karras) grids vcdm samples on, not only with
1000-step DDPM schedules. At sigma = 0 the replacement is exact: known pixels come out as given.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from vcdm.errors import VcdmError
from vcdm.samplers import randn_like
from vcdm.samplers.common import Denoiser, Generator, Sampler


def repaint_walk(num_steps: int, jump_length: int = 10, resamplings: int = 1) -> list[int]:
    """RePaint's resampling schedule as a walk over grid positions 0..num_steps (vcdm.samplers.common).

    Every `jump_length` steps down (at positions jump_length, 2 jump_length, ... below num_steps) the walk jumps
    back up `jump_length` positions, `resamplings - 1` times, and walks down again. resamplings = 1 is the plain
    walk 0, 1, ..., num_steps. A jump longer than the position it starts from goes back to position 0.

    Returns:
        the positions; the sampler takes len(walk) - 1 - (number of jumps) steps.
    """
    for name, v, lo in (
        ("num_steps", num_steps, 1),
        ("jump_length", jump_length, 1),
        ("resamplings", resamplings, 1),
    ):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise VcdmError(f"RePaint {name} must be an integer >= {lo}, got {v!r}")
    left = {p: resamplings - 1 for p in range(jump_length, num_steps, jump_length)}
    walk, here = [0], 0
    while here < num_steps:
        here += 1
        walk.append(here)
        if left.get(here, 0) > 0:
            left[here] -= 1
            here = max(0, here - jump_length)
            walk.append(here)
    return walk


def walk_steps(walk: list[int]) -> int:
    """The number of sampler steps along a walk (moves one position down)."""
    return sum(b == a + 1 for a, b in zip(walk, walk[1:]))


def repaint(
    sampler: Sampler,
    denoiser: Denoiser,
    noise: Tensor,
    sigmas: Tensor,
    cond: dict[str, Tensor] | None = None,
    *,
    known: Tensor,
    mask: Tensor,
    generator: Generator,
    known_generator: Generator,
    jump_length: int = 10,
    resamplings: int = 1,
    **options: Any,
) -> Tensor:
    """Inpaint with `sampler`: RePaint's known-region replacement after every step, on its resampling walk.

    Args:
        sampler: a vcdm sampler (it must take `correct` and `walk`).
        denoiser, noise, sigmas, cond, options: as for the sampler (noise: unit Gaussian (B, C, H, W)).
        known: (1 or B, C, H, W) the original images (their pixels where mask is 0 are kept).
        mask: (1 or B, 1 or C, H, W), 1 (>= 0.5) = to fill. All ones is plain sampling; all zeros returns known.
        generator: the sampler's fresh noise and the jumps' re-noising (one generator or one per sample).
        known_generator: the noise of the known region (one or one per sample): a stream of its own, so that
            with every pixel to fill and resamplings = 1 the result is plain sampling from the same generator.
        jump_length, resamplings: the resampling schedule (`repaint_walk`); resamplings = 1 is no resampling.
    Returns:
        the inpainted sample (B, C, H, W) in noise's dtype; known pixels equal `known` (cast to that dtype).
    """
    if known_generator is None:
        raise ValueError("repaint: pass a known_generator (it noises the known region)")
    params = inspect.signature(sampler).parameters
    if "correct" not in params or "walk" not in params:
        raise VcdmError(f"repaint: the sampler {getattr(sampler, '__name__', sampler)!r} takes no `correct` hook "
                        "or `walk`")  # fmt: skip
    if (
        mask.ndim != 4
        or known.ndim != 4
        or mask.shape[-2:] != noise.shape[-2:]
        or known.shape[1:] != noise.shape[1:]
    ):
        raise VcdmError(f"repaint: known {tuple(known.shape)} and mask {tuple(mask.shape)} must match the "
                        f"samples' shape {tuple(noise.shape)} (mask with 1 channel or as many)")  # fmt: skip
    keep = (mask < 0.5).to(noise.device)  # binary: a known pixel is replaced exactly
    known = known.to(noise.device, noise.dtype)

    def correct(x: Tensor, i: int, sigma_next: Tensor) -> Tensor:
        target = known.to(x.dtype) + sigma_next.to(x.dtype) * randn_like(x, known_generator)
        return torch.where(keep, target, x)  # the noised original where known, x where to fill

    walk = repaint_walk(len(sigmas) - 1, jump_length, resamplings)
    return sampler(denoiser, noise, sigmas, cond, generator=generator, correct=correct, walk=walk, **options)
