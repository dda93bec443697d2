"""Helpers shared by the samplers: per-sample noise, sigma broadcasting, the ODE derivative."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from vcdm.errors import VcdmError

Denoiser = Callable[[Tensor, Tensor, "dict[str, Tensor] | None"], Tensor]
Callback = Callable[[dict[str, Any]], None]
# correct(x, i, sigma_next) -> x: applied to the sample after step i lands on sigma_next (e.g. ILVR).
Correct = Callable[[Tensor, int, Tensor], Tensor]
Generator = torch.Generator | Sequence[torch.Generator] | None


def randn_like(x: Tensor, generator: Generator = None) -> Tensor:
    """Unit Gaussian noise shaped like x.

    `generator` may be one torch.Generator (for the whole batch) or a sequence of B generators, one per
    sample, so that a sample's noise depends only on its own seed and not on the batch it is in.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != x.shape[0]:
        raise VcdmError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack(
        [
            torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype).to(x.device)
            for g in generator
        ]
    )


def seeded_noise(shape: tuple[int, ...], seeds: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """Unit Gaussian tensors of `shape`, one per seed, stacked to (B, *shape); each depends on its seed only."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)


def check_sigmas(sigmas: Tensor) -> Tensor:
    """Validate a sampling grid: 1-D, at least 2 entries, strictly decreasing, ending in 0."""
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise VcdmError(f"sigmas must be a 1-D grid of at least 2 levels, got shape {tuple(sigmas.shape)}")
    if float(sigmas[-1]) != 0.0 or not bool((sigmas[:-1] > sigmas[1:]).all()):
        raise VcdmError("sigmas must be strictly decreasing and end in 0")
    return sigmas.float()


def batch_sigma(sigma: Tensor, x: Tensor) -> Tensor:
    """A scalar noise level as a (B,) tensor on x's device."""
    return sigma.to(x.device, torch.float32).expand(x.shape[0])


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """dx/dsigma of the probability-flow ODE in VE coordinates (Karras et al. 2022, Eq. 3 with s = 1)."""
    return (x - denoised) / sigma


def notify(callback: Callback | None, i: int, x: Tensor, sigma: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": float(sigma), "denoised": denoised})


def apply_correct(correct: Correct | None, x: Tensor, i: int, sigma_next: Tensor) -> Tensor:
    """The sample after step i, passed through an optional correction (e.g. ILVR) at level sigma_next."""
    return x if correct is None else correct(x, i, sigma_next)
