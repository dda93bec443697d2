"""What the samplers share: the one signature (`sampler`), the run that drives their steps (`SamplerRun`),
per-sample noise, the grid check and the ODE derivative.

The denoiser contract. A denoiser is D(x, sigma, cond) -> x0_hat in VE coordinates (x = x0 + sigma n):
x (B, ...) and sigma (B,) come in the sampler's dtype, which is the dtype of the noise it was given
(float64 in, float64 throughout; bf16 in, bf16 throughout; the grid is converted to it), and D must return
x0_hat (B, ...) in x's dtype. How D computes inside is its own business: vcdm.diffusion's EDMPrecond and
EpsPrecond run their float32 network and hand the result back in x's dtype. A denoiser that returns another
dtype is cast back to x's, so a sampler always returns its noise's dtype.

Every sampler takes (denoiser, noise, sigmas, cond=None, *, generator=None, callback=None, correct=None,
walk=None, **options) and returns the sample at sigma = 0 (noise's shape and dtype):
    noise: unit Gaussian (B, ...), scaled by sigmas[0] to start.
    sigmas: a strictly decreasing grid ending in 0 (e.g. `karras_sigmas`).
    generator: where fresh noise comes from: one torch.Generator, or one per sample (see `randn_like`).
    callback: called once per step with {"i", "x", "sigma", "denoised"} at the step's first denoiser call.
    correct: correct(x, i, sigma_next) -> x, applied to the sample after step i (e.g. ILVR, vcdm.editing);
        like the denoiser's, its result is cast back to x's dtype.
    walk: the positions in the grid the sample visits, from 0 (sigmas[0]) to len(sigmas) - 1 (sigma = 0);
        None is 0, 1, ..., N. A move one position down is a step of the sampler (then `correct`); a move up,
        from sigma to sigma' > sigma, re-noises the sample with the forward process,
        x <- x + sqrt(sigma'^2 - sigma^2) n (n from `generator`). RePaint's resampling schedule is such a
        walk (vcdm.editing.repaint). A multistep sampler restarts its history after a move up.
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
# A step may rely on state from step i - 1 only when `SamplerRun.continues(i)` (no move up in between).
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


def check_walk(walk: Sequence[int], num_steps: int) -> list[int]:
    """A walk over grid positions 0..num_steps (the module doc), checked: it starts at 0, ends at num_steps,
    and every move is one position down or any number of positions up."""
    walk = [int(p) for p in walk]
    if not walk or walk[0] != 0 or walk[-1] != num_steps:
        raise VcdmError(
            f"walk must start at grid position 0 and end at {num_steps}, got {walk[:3]}...{walk[-3:]}"
        )
    for a, b in zip(walk, walk[1:]):
        if not (b == a + 1 or 0 <= b < a):
            raise VcdmError(
                f"walk: a move from position {a} to {b} is neither one step down nor a jump back up"
            )
    return walk


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

    `loop(step)` runs the steps from noise * sigmas[0] down to sigma = 0 (along `walk`) and applies `correct`
    after each; `continues(i)` says whether step i follows step i - 1 directly; `denoise(x, sigma, i)` calls the denoiser and, given the step index i, reports the step to `callback`;
    `randn_like(x)` draws fresh noise from `generator`.
    """

    def __init__(
        self, denoiser, noise, sigmas, cond=None, generator=None, callback=None, correct=None, walk=None
    ):
        self.sigmas = check_sigmas(sigmas, noise)
        self.noise = noise
        self.denoiser, self.cond = denoiser, cond
        self.generator, self.callback, self.correct = generator, callback, correct
        self.walk = None if walk is None else check_walk(walk, self.num_steps)
        self._last_step: int | None = None  # the step taken last, reset by a move up

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

    def continues(self, i: int) -> bool:
        """Whether step i directly follows step i - 1 of the same trajectory (multistep history is valid)."""
        return i > 0 and self._last_step == i - 1

    def loop(self, step: Step) -> Tensor:
        """x_{i+1} = correct(step(i, x_i, sigma_i, sigma_{i+1}), i, sigma_{i+1}) from x_0 = noise * sigma_0,
        along the walk (moves up re-noise the sample: module doc)."""
        x = self.noise * self.sigmas[0]
        walk = self.walk if self.walk is not None else range(self.num_steps + 1)
        here = 0
        for there in list(walk)[1:]:
            if there < here:  # back up the grid: forward-noise from sigmas[here] to sigmas[there]
                extra = (self.sigmas[there] ** 2 - self.sigmas[here] ** 2).sqrt()
                x = x + extra * self.randn_like(x)
                self._last_step, here = None, there
                continue
            sigma_next = self.sigmas[there]
            x = step(here, x, self.sigmas[here], sigma_next)
            if self.correct is not None:
                x = self.correct(x, here, sigma_next).to(x.dtype)
            self._last_step, here = here, there
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
        walk: Sequence[int] | None = None,
        **options: Any,
    ) -> Tensor:
        return body(SamplerRun(denoiser, noise, sigmas, cond, generator, callback, correct, walk), **options)

    shared = list(inspect.signature(sample).parameters.values())[:-1]  # without **options
    body_signature = inspect.signature(body)
    options = list(body_signature.parameters.values())[1:]  # after `run`
    public = functools.wraps(body)(torch.no_grad()(sample))
    public.__signature__ = inspect.Signature(
        shared + options, return_annotation=body_signature.return_annotation
    )
    return public
