"""Filling in images: inpainting and uncropping (a mask, 1 = to fill) and colourisation, with a Palette model
(vcdm.stages.palette: a U-Net trained for the task) or with RePaint around any image denoiser (the single-stage
baseline, the two-stage decoder given y, a Palette model sampled unconditionally).

For the two-stage decoder the embedding y of the completed image is unknown; RePaint takes it from the prior
(cond="prior", one y per seed), from the visible part (cond="masked": the embedding of the image with its holes
set to mid-grey; cond="filled": of the image with its holes filled by diffusing the known pixels in, `fill`), or
as given (a dict). bench/inpainting.py measures which completes better.

Each output depends only on its seed (streams vcdm.seeding.REPAINT / PALETTE). Known pixels are returned
exactly as given: RePaint replaces them at every step, a Palette output has them pasted back.

Latent models (vcdm.latent): a Palette model trained with palette.space 'latent' samples its latents and decodes
them; RePaint around a latent decoder replaces the known *latents* (the encoded image) at every step, with the
mask max-pooled to the latent grid (a cell is filled if any of its pixels is). Both paste the known pixels after
decoding, so the pixels near a hole's edge may differ from the ones the autoencoder would reconstruct.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcdm.config import DiffusionConfig, from_dict
from vcdm.data.masks import uncrop_mask
from vcdm.editing.common import per_seed, sampler_fn
from vcdm.editing.guided import resolve_model
from vcdm.editing.latent import check_images, embed
from vcdm.editing.repaint import repaint
from vcdm.errors import VcdmError
from vcdm.guidance import classifier_free
from vcdm.latent import latent_mask
from vcdm.pipeline import Pipeline, sampling_sigmas
from vcdm.samplers.common import Denoiser, Sampler
from vcdm.seeding import AUG, FRESH, PALETTE, REPAINT, START, generators, seeded_randn
from vcdm.stages.palette import palette_condition

FILLS = ("mean", "blur")


@dataclass
class PaletteModel:
    """A trained Palette export: its denoiser and meta ("task", "net", "diffusion", "condition"), and for one
    trained in latent space (palette.space 'latent') the vcdm.latent.LatentSpace it samples in."""

    denoiser: nn.Module
    meta: dict[str, Any]
    space: Any = None

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def diffusion(self) -> DiffusionConfig:
        return from_dict(DiffusionConfig, self.meta["diffusion"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape of the images it fills in (decoded from its latents in latent space)."""
        if self.space is not None:
            return tuple(self.meta["latent"]["image_shape"])
        return self.sample_shape

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """The shape it samples in: image_shape's in pixel space, the latent's in latent space."""
        net = self.meta["net"]
        return (int(net["in_channels"]), int(net["image_size"]), int(net["image_size"]))

    @property
    def condition(self) -> str:
        return str(self.meta.get("condition", "none"))


def load_palette(run_dir: str | Path, device: torch.device | str = "cpu") -> PaletteModel:
    """The run's Palette model (RUN/palette), on `device`; in latent space with the run's autoencoder (a one-line
    VcdmError when it is missing or was retrained since)."""
    from vcdm.runs import RunDir
    from vcdm.stages import load_model

    run = RunDir(run_dir)
    if run.stage_meta("palette") is None:
        raise VcdmError(f"{run.stage('palette')}: no Palette export; train one with `vcdm train palette "
                        f"{run.path} --set palette.task=inpaint`")  # fmt: skip
    model, meta = load_model(run.stage("palette"), "palette")
    space = None
    if meta.get("space") == "latent":
        from vcdm.stages.autoencoder import latent_space_for

        space = latent_space_for(run.path, meta, device)
    return PaletteModel(model.to(device), meta, space)


def _image_shape(model: PaletteModel | Pipeline | Denoiser) -> tuple[int, ...] | None:
    if isinstance(model, PaletteModel):
        return model.image_shape
    if isinstance(model, Pipeline):
        return tuple(model.image_shape)
    return None


def _inputs(
    model: PaletteModel | Pipeline | Denoiser, images: Tensor, masks: Tensor | None, n: int
) -> tuple[Tensor, Tensor | None]:
    """images (n, C, H, W) float32 and masks (n, 1, H, W) in {0, 1}, checked and repeated per seed."""
    shape = _image_shape(model)
    if images.ndim != 4 or (shape is not None and tuple(images.shape[1:]) != shape):
        want = f"(B, {', '.join(map(str, shape))})" if shape else "(B, C, H, W)"
        raise VcdmError(f"images: expected {want}, got {tuple(images.shape)}")
    images = per_seed(images.float(), n, "images")
    if masks is None:
        return images, None
    if masks.ndim != 4 or masks.shape[1] != 1 or masks.shape[-2:] != images.shape[-2:]:
        raise VcdmError(f"masks: expected (B, 1, {images.shape[2]}, {images.shape[3]}) (1 = to fill), got "
                        f"{tuple(masks.shape)}")  # fmt: skip
    masks = per_seed((masks >= 0.5).float(), n, "masks").to(images.device)
    return images, masks


def paste(images: Tensor, filled: Tensor, masks: Tensor) -> Tensor:
    """filled where masks is 1, images elsewhere (exactly)."""
    return torch.where(masks.bool().expand_as(filled), filled, images.to(filled.dtype))


@torch.no_grad()
def palette_sample(
    palette: PaletteModel,
    images: Tensor,
    seeds: Sequence[int],
    *,
    masks: Tensor | None = None,
    sampler: str | Sampler = "heun",
    num_steps: int = 18,
    guidance: float = 1.0,
    cond: dict[str, Tensor] | None = None,
    options: dict[str, Any] | None = None,
) -> Tensor:
    """Fill in or colourise images with a Palette model, one output per seed.

    Args:
        palette: `load_palette(run)`.
        images: (1 or len(seeds), C, H, W) in [-1, 1]; for colorize, any RGB images (only their luma is read).
        masks: (1 or len(seeds), 1, H, W), 1 = to fill (inpaint / uncrop; None for colorize).
        guidance: classifier-free weight on the condition image (1 = as trained, 0 = unconditional).
        cond: y / label ({"emb": normalised y, "label": ...}) for a Palette model conditioned on them.
    Returns:
        float32 (len(seeds), C, H, W) in [-1, 1]; the known pixels of inpaint / uncrop are the input's.
    """
    seeds = [int(s) for s in seeds]
    if (masks is None) != (palette.task == "colorize"):
        raise VcdmError(f"a Palette model for {palette.task!r} "
                        f"{'takes no mask' if masks is not None else 'needs masks (1 = to fill)'}")  # fmt: skip
    if palette.condition != "none" and not cond:
        raise VcdmError(f"this Palette model is also conditioned on {palette.condition!r}: pass cond=")
    device = next(palette.denoiser.parameters()).device
    images, masks = _inputs(palette, images.to(device), masks, len(seeds))
    c = {"lowres": palette_condition(palette.task, images, masks, palette.space), **(cond or {})}
    denoiser = classifier_free(palette.denoiser, guidance) if guidance != 1.0 else palette.denoiser
    noise = seeded_randn(seeds, palette.sample_shape, PALETTE, START, device=device)
    sigmas = sampling_sigmas(palette.diffusion, num_steps)
    x = sampler_fn(sampler)(denoiser, noise, sigmas, c, generator=generators(seeds, PALETTE, FRESH),
                            **(options or {}))  # fmt: skip
    x = palette.space.decode(x) if palette.space is not None else x.clamp(-1, 1)
    return x if masks is None else paste(images, x, masks)


@torch.no_grad()
def repaint_sample(
    model: Pipeline | Denoiser,
    images: Tensor,
    masks: Tensor,
    seeds: Sequence[int],
    *,
    sampler: str | Sampler = "euler",
    num_steps: int = 18,
    cond: str | dict[str, Tensor] | None = "prior",
    guidance: float = 1.0,
    jump_length: int = 10,
    resamplings: int = 1,
    diffusion: DiffusionConfig | None = None,
    options: dict[str, Any] | None = None,
) -> Tensor:
    """Inpaint with RePaint around a pipeline's image stage (or a bare denoiser), one output per seed.

    Args:
        model: a Pipeline (its decoder: the two-stage decoder or the single-stage baseline, in pixel or latent
            space) or a denoiser.
        images, masks: as for `palette_sample` (masks required).
        cond: the two-stage decoder's y: "prior" (drawn with each seed), "masked" (the embedding of the visible
            part: holes set to 0, mid-grey), "filled" (of the image with its holes blur-filled, `fill`), "image"
            (of the full image: an oracle for benchmarks), or a dict; see vcdm.editing.guided.resolve_model.
        jump_length, resamplings: RePaint's schedule (vcdm.editing.repaint.repaint_walk).
        diffusion: the grid's config for a bare denoiser.
    Returns:
        float32 (len(seeds), C, H, W); known pixels exactly the input's; clamped to [-1, 1] for a Pipeline.
    """
    seeds = [int(s) for s in seeds]
    if isinstance(model, Pipeline):
        images = check_images(model, images)  # float, the pipeline's shape, on its device
    images, masks = _inputs(model, images, masks, len(seeds))
    if cond in ("masked", "filled"):
        if not (isinstance(model, Pipeline) and model.uses_embedding):
            raise VcdmError(f"cond {cond!r} needs a two-stage pipeline (its decoder is conditioned on y)")
        visible = images * (1 - masks) if cond == "masked" else fill(images, masks, "blur")
        cond = {"emb": embed(model, visible)}
    space = model.latent_space if isinstance(model, Pipeline) else None
    denoiser, diffusion, cond = resolve_model(model, cond, seeds, images, diffusion, guidance, latent=True)
    known, holes = images, masks
    if space is not None:  # a latent decoder: RePaint on its latents, the mask max-pooled to the latent grid
        known, holes = space.encode(images).to(images.device), latent_mask(masks, space.cfg.factor)
    noise = seeded_randn(seeds, tuple(known.shape[1:]), REPAINT, START, device=images.device)
    x = repaint(sampler_fn(sampler), denoiser, noise, sampling_sigmas(diffusion, num_steps), cond, known=known,
                mask=holes, generator=generators(seeds, REPAINT, FRESH), known_generator=generators(seeds, REPAINT, AUG),
                jump_length=jump_length, resamplings=resamplings, **(options or {}))  # fmt: skip
    if not isinstance(model, Pipeline):
        return x
    return paste(images, space.decode(x) if space is not None else x.clamp(-1, 1), masks)


def inpaint(
    model: PaletteModel | Pipeline | Denoiser,
    images: Tensor,
    masks: Tensor,
    seeds: Sequence[int],
    **kwargs: Any,
) -> Tensor:
    """Inpaint: with a PaletteModel, `palette_sample`; with a Pipeline or a denoiser, RePaint (`repaint_sample`).
    kwargs go to the one called."""
    if isinstance(model, PaletteModel):
        return palette_sample(model, images, seeds, masks=masks, **kwargs)
    return repaint_sample(model, images, masks, seeds, **kwargs)


def uncrop(
    model: PaletteModel | Pipeline | Denoiser,
    images: Tensor,
    seeds: Sequence[int],
    *,
    side: str = "right",
    width: float = 0.25,
    **kwargs: Any,
) -> Tensor:
    """Extend images outward: fill the band of `width` (a fraction of the side) along `side` ("left", "right",
    "top", "bottom" or "around"), as `inpaint` does."""
    masks = uncrop_mask(images.shape[-1], side, width)[None].to(images.device)
    return inpaint(model, images, masks, seeds, **kwargs)


def colorize(palette: PaletteModel, images: Tensor, seeds: Sequence[int], **kwargs: Any) -> Tensor:
    """Colourise images (their luma is the condition) with a Palette model trained with palette.task=colorize."""
    if palette.task != "colorize":
        raise VcdmError(f"this Palette model was trained for {palette.task!r}, not 'colorize' "
                        "(vcdm train palette RUN --set palette.task=colorize)")  # fmt: skip
    return palette_sample(palette, images, seeds, **kwargs)


def fill(images: Tensor, masks: Tensor, kind: str = "mean", iters: int = 200) -> Tensor:
    """Trivial baselines: "mean" fills the holes with the mean of each image's known pixels (per channel);
    "blur" diffuses the known pixels into the holes (repeated 3x3 averaging with the known pixels held).

    Args:
        images: (B, C, H, W) float. masks: (B, 1, H, W), 1 = to fill.
    """
    if kind not in FILLS:
        raise VcdmError(f"fill must be one of {FILLS}, got {kind!r}")
    images, keep = images.float(), (masks < 0.5).float().expand_as(images)
    mean = (images * keep).sum((2, 3), keepdim=True) / keep.sum((2, 3), keepdim=True).clamp(min=1)
    x = torch.where(keep.bool(), images, mean.expand_as(images))
    if kind == "blur":
        for _ in range(iters):
            x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
            x = torch.where(keep.bool(), images, x)
    return x
