"""What the samplers share: the one signature (`sampler`), the run that drives their steps (`SamplerRun`),
per-sample noise, the grid check and the ODE derivative.

The denoiser contract. A denoiser is D(x, sigma, cond) -> x0_hat in VE coordinates (x = x0 + sigma n):
x (B, ...) and sigma (B,) come in the sampler's dtype, which is the dtype of the noise it was given
(float64 in, float64 throughout; bf16 in, bf16 throughout; the grid is converted to it), and D must return
x0_hat (B, ...) in x's dtype. How D computes inside is its own business: vcdm.diffusion's EDMPrecond and
EpsPrecond run their float32 network and hand the result back in x's dtype. A denoiser that returns another
dtype is cast back to x's, so a sampler always returns its noise's dtype.

Every sampler takes (denoiser, noise, sigmas, cond=None, *, generator=None, callback=None, correct=None,
**options) and returns the sample at sigma = 0 (noise's shape and dtype):
    noise: unit Gaussian (B, ...), scaled by sigmas[0] to start.
    sigmas: a strictly decreasing grid ending in 0 (e.g. `karras_sigmas`).
    generator: where fresh noise comes from: one torch.Generator, or one per sample (see `randn_like`).
    callback: called once per step with {"i", "x", "sigma", "denoised"} at the step's first denoiser call.
    correct: correct(x, i, sigma_next) -> x, applied to the sample after step i (e.g. ILVR, vcdm.editing);
        like the denoiser's, its result is cast back to x's dtype.
"""

from __future__ import annotations

import functools
import inspect
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
# step(i, x, sigma, sigma_next) -> the sample at sigma_next, from x at sigma = sigmas[i].
Step = Callable[[int, Tensor, Tensor, Tensor], Tensor]
Sampler = Callable[..., Tensor]


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


def check_sigmas(sigmas: Tensor, x: Tensor) -> Tensor:
    """A sampling grid in x's dtype and on x's device, checked (after conversion, so that a grid whose
    levels merge in a low precision is refused): 1-D, at least 2 entries, strictly decreasing, ending in 0."""
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise VcdmError(f"sigmas must be a 1-D grid of at least 2 levels, got shape {tuple(sigmas.shape)}")
    sigmas = sigmas.to(x.device, x.dtype)
    if float(sigmas[-1]) != 0.0 or not bool((sigmas[:-1] > sigmas[1:]).all()):
        raise VcdmError(f"sigmas must be strictly decreasing and end in 0 (in {x.dtype})")
    return sigmas


def batch_sigma(sigma: Tensor, x: Tensor) -> Tensor:
    """A scalar noise level as a (B,) tensor in x's dtype, on x's device."""
    return sigma.to(x.device, x.dtype).expand(x.shape[0])


def denoise(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond: dict[str, Tensor] | None) -> Tensor:
    """x0_hat = D(x, sigma, cond) for a scalar level sigma, in x's dtype (the denoiser contract above)."""
    return denoiser(x, batch_sigma(sigma, x), cond).to(x.dtype)


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """dx/dsigma of the probability-flow ODE in VE coordinates (Karras et al. 2022, Eq. 3 with s = 1)."""
    return (x - denoised) / sigma


class SamplerRun:
    """One call of a sampler: its arguments (module doc), the grid checked and in the noise's dtype
    (`sigmas`), and what every step shares.

    `loop(step)` runs the steps from noise * sigmas[0] down to sigma = 0 and applies `correct` after each;
    `denoise(x, sigma, i)` calls the denoiser and, given the step index i, reports the step to `callback`;
    `randn_like(x)` draws fresh noise from `generator`.
    """

    def __init__(self, denoiser, noise, sigmas, cond=None, generator=None, callback=None, correct=None):
        self.sigmas = check_sigmas(sigmas, noise)
        self.noise = noise
        self.denoiser, self.cond = denoiser, cond
        self.generator, self.callback, self.correct = generator, callback, correct

    @property
    def num_steps(self) -> int:
        return len(self.sigmas) - 1

    def denoise(self, x: Tensor, sigma: Tensor, i: int | None = None) -> Tensor:
        denoised = denoise(self.denoiser, x, sigma, self.cond)
        if i is not None and self.callback is not None:
            self.callback({"i": i, "x": x, "sigma": float(sigma), "denoised": denoised})
        return denoised

    def randn_like(self, x: Tensor) -> Tensor:
        return randn_like(x, self.generator)

    def loop(self, step: Step) -> Tensor:
        """x_{i+1} = correct(step(i, x_i, sigma_i, sigma_{i+1}), i, sigma_{i+1}) from x_0 = noise * sigma_0."""
        x = self.noise * self.sigmas[0]
        for i in range(self.num_steps):
            sigma_next = self.sigmas[i + 1]
            x = step(i, x, self.sigmas[i], sigma_next)
            if self.correct is not None:
                x = self.correct(x, i, sigma_next).to(x.dtype)
        return x


def sampler(body: Callable[..., Tensor]) -> Sampler:
    """Make `body(run: SamplerRun, **options) -> sample` a sampler with the shared signature (module doc).

    The sampler runs under torch.no_grad; `inspect.signature` reports the shared signature followed by
    body's keyword options, and unknown options raise TypeError.
    """

    def sample(
        denoiser: Denoiser,
        noise: Tensor,
        sigmas: Tensor,
        cond: dict[str, Tensor] | None = None,
        *,
        generator: Generator = None,
        callback: Callback | None = None,
        correct: Correct | None = None,
        **options: Any,
    ) -> Tensor:
        return body(SamplerRun(denoiser, noise, sigmas, cond, generator, callback, correct), **options)

    shared = list(inspect.signature(sample).parameters.values())[:-1]  # without **options
    body_signature = inspect.signature(body)
    options = list(body_signature.parameters.values())[1:]  # after `run`
    public = functools.wraps(body)(torch.no_grad()(sample))
    public.__signature__ = inspect.Signature(
        shared + options, return_annotation=body_signature.return_annotation
    )
    return public
