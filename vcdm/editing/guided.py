"""Guided synthesis from an image: SDEdit (start part-way down the grid) and ILVR (pull low frequencies).

Both are options around the shared samplers (docs/architecture.md, "Editing"), not loops of their own: SDEdit calls a
sampler on the tail of the grid, ILVR passes the samplers a per-step `correct` hook.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vcdm.config import DiffusionConfig, SampleConfig
from vcdm.editing.common import per_seed, sampler_fn
from vcdm.editing.latent import check_images, embed
from vcdm.errors import VcdmError
from vcdm.guidance import classifier_free
from vcdm.pipeline import Pipeline, sampling_sigmas
from vcdm.samplers import randn_like
from vcdm.samplers.common import Denoiser, Generator, Sampler
from vcdm.seeding import FRESH, ILVR, SDEDIT, START, generators, seeded_randn


def resolve_model(
    model: Pipeline | Denoiser,
    cond: str | dict[str, Tensor] | None,
    seeds: Sequence[int],
    image: Tensor,
    diffusion: DiffusionConfig | None,
    guidance: float,
    latent: bool = False,
) -> tuple[Denoiser, DiffusionConfig, dict[str, Tensor] | None]:
    """(denoiser, diffusion config, cond) for guided sampling from a Pipeline's decoder or a bare denoiser.

    For a two-stage pipeline, cond "prior" draws y from the prior with each seed (as `pipe(seeds)` would),
    "image" uses the embedding of `image` (the guide or reference itself); a dict is used as given.
    A single-stage pipeline is unconditional (a label decoder gets the null condition) unless a dict is given.
    A bare denoiser takes a dict or None, and `diffusion` (default: DiffusionConfig()) for its grid.
    latent: whether the caller works in a latent decoder's space (RePaint); otherwise (SDEdit, ILVR: they guide
    pixels) a latent decoder is refused.
    """
    if not isinstance(model, Pipeline):
        if isinstance(cond, str):
            raise VcdmError(f"cond {cond!r} needs a Pipeline; give a bare denoiser a dict or None")
        denoiser, diffusion = model, diffusion or DiffusionConfig()
    else:
        if model.latent_space is not None and not latent:
            raise VcdmError("SDEdit and ILVR guide the decoder's pixels; this decoder samples in an autoencoder's "
                            "latent space (decoder.space 'latent')")  # fmt: skip
        denoiser, diffusion = model.decoder, model.decoder_diffusion
        n = len(seeds)
        if isinstance(cond, str) and model.uses_embedding:
            if model.condition != "embedding":
                raise VcdmError(f"cond {cond!r} needs a decoder conditioned on embeddings only, not "
                                f"{model.condition!r}; pass a cond dict")  # fmt: skip
            if cond == "prior":
                cond = {"emb": model.sample_embeddings(seeds, None, SampleConfig())}
            elif cond == "image":
                cond = {"emb": per_seed(embed(model, image), n, "image")}
            else:
                raise VcdmError(f"cond must be 'prior', 'image' or a dict, got {cond!r}")
        elif isinstance(cond, str):
            null = {"null": torch.ones(n, dtype=torch.bool, device=model.device)}
            cond = null if "label" in model.condition else None
    if cond is not None and guidance != 1.0:
        denoiser = classifier_free(denoiser, guidance)
    return denoiser, diffusion, cond


@torch.no_grad()
def sdedit(
    model: Pipeline | Denoiser,
    guide: Tensor,
    sigma_0: float,
    seeds: Sequence[int],
    *,
    sampler: str | Sampler = "euler",
    num_steps: int,
    cond: str | dict[str, Tensor] | None = "prior",
    options: dict[str, Any] | None = None,
    diffusion: DiffusionConfig | None = None,
    guidance: float = 1.0,
) -> Tensor:
    """SDEdit (Meng et al. 2022, Sec. 3): noise the guide to sigma_0, then denoise on the grid below sigma_0.

    x = guide + sigma_0 * n (n from each seed), then `sampler` runs on [sigma_0] + the levels of the model's
    num_steps grid that lie below sigma_0. Small sigma_0 stays close to the guide; sigma_0 at the grid's
    top ignores it.

    Args:
        model: a Pipeline (its decoder) or a bare denoiser D(x, sigma, cond).
        guide: float32 (1 or len(seeds), ...); for a Pipeline, images in [-1, 1] (B, C, H, W).
        sigma_0: starting noise level >= 0; 0 returns the guide unchanged.
        seeds: one output per seed; its noise and the sampler's fresh noise depend on the seed only.
        sampler: a name in vcdm.samplers.SAMPLERS or a sampler function. options: its keyword options.
        cond: see `resolve_model` ("prior", "image" = the guide's own embedding, a dict, or None).
        diffusion: the grid's config for a bare denoiser (ignored for a Pipeline).
        guidance: classifier-free weight (1 = as trained).
    Returns:
        float32 (len(seeds), ...); clamped to [-1, 1] for a Pipeline.
    """
    seeds = [int(s) for s in seeds]
    if isinstance(model, Pipeline):
        guide = check_images(model, guide, "guide")
    guide = per_seed(guide.float(), len(seeds), "guide")
    if not sigma_0 >= 0:
        raise VcdmError(f"sigma_0 must be >= 0, got {sigma_0}")
    if sigma_0 == 0:
        return guide.clone()
    fn = sampler_fn(sampler)
    denoiser, diffusion, cond = resolve_model(model, cond, seeds, guide, diffusion, guidance)
    grid = sampling_sigmas(diffusion, num_steps)
    sigmas = torch.cat([torch.tensor([float(sigma_0)]), grid[grid < sigma_0]])
    n = seeded_randn(seeds, tuple(guide.shape[1:]), SDEDIT, START, device=guide.device)
    # The samplers start from noise * sigmas[0]; this makes that guide + sigma_0 * n.
    start = guide / sigma_0 + n
    x = fn(denoiser, start, sigmas, cond, generator=generators(seeds, SDEDIT, FRESH), **(options or {}))
    return x.clamp(-1, 1) if isinstance(model, Pipeline) else x


def lowpass(x: Tensor, factor: int) -> Tensor:
    """phi_N of ILVR: average-pool by `factor`, then upsample back (nearest), for x (B, C, H, W).

    With block averages and nearest upsampling phi_N is a projection (phi_N(phi_N(x)) = phi_N(x)), so after
    an ILVR correction the sample's low frequencies equal the target's exactly. factor 1 is the identity.
    """
    if not isinstance(factor, int) or factor < 1:
        raise VcdmError(f"ILVR factor must be an integer >= 1, got {factor!r}")
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise VcdmError(f"ILVR factor {factor} must divide the image size {h}x{w}")
    if factor == 1:
        return x
    return F.interpolate(F.avg_pool2d(x, factor), scale_factor=factor, mode="nearest")


def ilvr(
    sampler: Sampler,
    denoiser: Denoiser,
    noise: Tensor,
    sigmas: Tensor,
    cond: dict[str, Tensor] | None = None,
    *,
    reference: Tensor,
    factor: int,
    generator: Generator,
    sigma_stop: float = 0.0,
    **options: Any,
) -> Tensor:
    """ILVR (Choi et al. 2021, Algorithm 1) around any sampler: after each step to sigma_{i+1},
    x <- x - phi_N(x) + phi_N(reference + sigma_{i+1} n), with fresh n from `generator`.

    Args:
        sampler: a vcdm sampler function (it must accept the `correct` hook).
        denoiser, noise, sigmas, cond, options: as for the sampler.
        reference: float32 (1 or B, C, H, W), the image whose low frequencies the sample takes.
        factor: N, the downsampling factor of phi_N; must divide H and W. 1 returns the reference itself.
        generator: one generator or one per sample (required: it also noises the reference).
        sigma_stop: correct only the steps that land on sigma_{i+1} >= sigma_stop (the conditioning range of
            Choi et al. 2021); the last steps are then the model's own, which removes the flat
            patches that a large N leaves where the sample and the reference disagree. 0: every step.
    Returns:
        the sample float32 (B, C, H, W).
    """
    if generator is None:
        raise ValueError("ilvr: pass a generator (it draws the reference's noise)")
    if not sigma_stop >= 0:
        raise VcdmError(f"ILVR sigma_stop must be >= 0, got {sigma_stop}")
    if "correct" not in inspect.signature(sampler).parameters:
        raise VcdmError(f"ilvr: the sampler {getattr(sampler, '__name__', sampler)!r} has no `correct` hook")
    lowpass(noise, factor)  # validate the factor before sampling
    reference = reference.to(noise.device, torch.float32)

    def correct(x: Tensor, i: int, sigma_next: Tensor) -> Tensor:
        if sigma_next < sigma_stop:
            return x
        target = reference + sigma_next * randn_like(x, generator)
        return x - lowpass(x, factor) + lowpass(target, factor)

    return sampler(denoiser, noise, sigmas, cond, generator=generator, correct=correct, **options)


@torch.no_grad()
def ilvr_sample(
    model: Pipeline | Denoiser,
    reference: Tensor,
    factor: int,
    seeds: Sequence[int],
    *,
    sampler: str | Sampler = "euler",
    num_steps: int,
    cond: str | dict[str, Tensor] | None = "prior",
    options: dict[str, Any] | None = None,
    diffusion: DiffusionConfig | None = None,
    guidance: float = 1.0,
    sigma_stop: float = 0.0,
) -> Tensor:
    """Sample from pure noise (one per seed) with ILVR toward `reference`; see `ilvr` and `sdedit` for args.

    cond "image" conditions a two-stage decoder on the reference's own embedding.
    Returns:
        float32 (len(seeds), C, H, W); clamped to [-1, 1] for a Pipeline.
    """
    seeds = [int(s) for s in seeds]
    if isinstance(model, Pipeline):
        reference = check_images(model, reference, "reference")
    reference = per_seed(reference.float(), len(seeds), "reference")
    fn = sampler_fn(sampler)
    denoiser, diffusion, cond = resolve_model(model, cond, seeds, reference, diffusion, guidance)
    sigmas = sampling_sigmas(diffusion, num_steps)
    noise = seeded_randn(seeds, tuple(reference.shape[1:]), ILVR, START, device=reference.device)
    x = ilvr(fn, denoiser, noise, sigmas, cond, reference=reference, factor=factor, sigma_stop=sigma_stop,
             generator=generators(seeds, ILVR, FRESH), **(options or {}))  # fmt: skip
    return x.clamp(-1, 1) if isinstance(model, Pipeline) else x
