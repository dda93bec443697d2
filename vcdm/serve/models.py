"""The runs `vcdm serve` holds: their pipelines, what they can do (`info`), and each operation of the page
as a call into vcdm.pipeline / vcdm.editing that returns images and their parameters.

Nothing here parses requests or knows about HTTP: the app (vcdm.serve.app) checks the bounds and calls these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vcdm import __version__, pngmeta
from vcdm.config import SampleConfig, to_dict
from vcdm.errors import VcdmError
from vcdm.runs import RunDir
from vcdm.samplers import SAMPLERS

Image = tuple[Tensor, dict[str, Any]]  # one result: (C, H, W) float32 in [-1, 1] and its parameters


def calls_per_step(sampler: str) -> int:
    """Denoiser calls one step of a sampler makes (heun: two but on the last step)."""
    return 2 if sampler == "heun" else 1


@dataclass
class Sampling:
    """The page's sampling form, checked by the app."""

    stage: str
    num: int
    seed: int
    num_steps: int
    sampler: str
    guidance: float
    prior_num_steps: int
    prior_sampler: str
    prior_guidance: float
    label: int | None = None
    prompt: str | None = None  # for a text-conditioned stage


class ServedRun:
    """One run directory and its pipelines: "decoder" (two-stage, with the embedder for editing) and/or
    "baseline", loaded when the server starts; the upsampler and the Palette model on first use.

    Args:
        path: the run directory. name: how the page and the API call it. device: where the networks run.
    """

    def __init__(self, path: str | Path, name: str, device: torch.device | str = "cpu"):
        from vcdm.pipeline import Pipeline

        self.path, self.name, self.device = Path(path).resolve(), name, device
        self.run = RunDir(self.path)
        if not self.run.config.is_file():
            raise VcdmError(f"{self.path}: not a vcdm run (no {self.run.config.name})")
        self.cfg = self.run.load_config()
        self.pipes: dict[str, Any] = {}
        if self.run.stage_meta("decoder") is not None and self.run.stage_meta("prior") is not None:
            self.pipes["decoder"] = Pipeline.from_run(
                self.path, "decoder", device, embedder=True, upsampler=False
            )
        if self.run.stage_meta("baseline") is not None:
            self.pipes["baseline"] = Pipeline.from_run(self.path, "baseline", device, upsampler=False)
        if not self.pipes:
            raise VcdmError(f"{self.path}: no trained image stage to sample (train decoder or baseline)")
        self._upsampler: Any = None
        self._palette: Any = None

    # ---- what the run holds ----

    @property
    def has_upsampler(self) -> bool:
        return self.run.stage_meta("upsampler") is not None

    @property
    def has_palette(self) -> bool:
        meta = self.run.stage_meta("palette")
        return meta is not None and meta.get("task") == "inpaint"

    def upsampler(self) -> Any:
        """The cascade's upsampler as a pipeline of its own (loaded once)."""
        if not self.has_upsampler:
            raise VcdmError(f"run {self.name} has no upsampler (`vcdm train upsampler RUN`)")
        if self._upsampler is None:
            from vcdm.pipeline import Pipeline

            self._upsampler = Pipeline.from_run(self.path, None, self.device, upsampler=True, embedder=True)
        return self._upsampler

    def palette(self) -> Any:
        if self._palette is None and self.has_palette:
            from vcdm.editing import load_palette

            self._palette = load_palette(self.path, self.device)
        return self._palette

    def holders(self) -> list[Any]:
        """Everything with a `denoiser` that a job may call (vcdm.serve.jobs.watching)."""
        pipes = [*self.pipes.values(), *([self._upsampler] if self._upsampler is not None else [])]
        return [c for p in pipes for c in p.components.values()] + ([self._palette] if self._palette else [])

    def pipe(self, stage: str) -> Any:
        if stage not in self.pipes:
            raise VcdmError(f"run {self.name} has no {stage!r} stage; it has {sorted(self.pipes)}")
        return self.pipes[stage]

    def edit_pipe(self) -> Any:
        """The pipeline edits use: the two-stage one (y, x_T) when the run has it, else the baseline."""
        return self.pipes.get("decoder") or self.pipes["baseline"]

    def info(self, full: bool = False) -> dict[str, Any]:
        """What the page needs to build its forms; full adds the config and the report (markdown)."""
        first = next(iter(self.pipes.values()))
        num_classes = max(
            (c.meta["net"].get("num_classes", 0) for p in self.pipes.values() for c in p.components.values()),
            default=0,
        )
        # editing with (y, x_T) needs a decoder conditioned on y alone and the run's image embedder (which
        # vcdm.editing feeds at its own input size, whatever the decoder's)
        dec = self.pipes.get("decoder")
        editing = dec is not None and dec.condition == "embedding" and dec.embedder is not None
        out = {
            "name": self.name,
            "stages": list(self.pipes),
            "image_shape": list(first.image_shape),
            "num_classes": num_classes,
            "prompt": any(p.text_conditional for p in self.pipes.values()),
            "upsampler": self.has_upsampler,
            "palette": self.has_palette,
            "editing": editing,
            "samplers": list(SAMPLERS),
            "defaults": to_dict(self.cfg.sample),
        }
        if full:
            report = self.run.report
            out["config"] = to_dict(self.cfg)
            out["report"] = report.read_text() if report.is_file() else None
        return out

    # ---- operations: each returns [(image, parameters)] ----

    def _params(self, stage: str, seed: int, s: SampleConfig, **extra: Any) -> dict[str, Any]:
        return pngmeta.params(self.path, stage, seed, s, **extra)

    def sample_calls(self, req: Sampling) -> int:
        """The denoiser calls `sample` makes (for progress)."""
        s = self._sample_config(req)
        per_batch = s.num_steps * calls_per_step(s.sampler)
        if self.pipe(req.stage).uses_embedding:
            per_batch += s.prior_num_steps * calls_per_step(s.prior_sampler)
        return math.ceil(req.num / s.batch_size) * per_batch

    def _sample_config(self, req: Sampling) -> SampleConfig:
        return replace(self.cfg.sample, num_steps=req.num_steps, sampler=req.sampler, guidance=req.guidance,
                       prior_num_steps=req.prior_num_steps, prior_sampler=req.prior_sampler,
                       prior_guidance=req.prior_guidance)  # fmt: skip

    def sample(self, req: Sampling) -> list[Image]:
        """Images for seeds seed..seed+num-1, exactly as `vcdm sample RUN --stage ... --seed ...` draws them."""
        pipe, s = self.pipe(req.stage), self._sample_config(req)
        if req.label is not None and not pipe.class_conditional:
            raise VcdmError(
                f"the {req.stage} stage of run {self.name} is not class-conditional: give no label"
            )
        seeds = list(range(req.seed, req.seed + req.num))
        text = {"prompts": req.prompt} if req.prompt is not None else {}
        res = pipe(seeds, s, labels=req.label, **text)
        return [(img, self._params(req.stage, seed, s, label=req.label, prompt=req.prompt))
                for img, seed in zip(res.images, seeds)]  # fmt: skip

    def _edit_params(
        self, kind: str, source: dict[str, Any], seed: int | None, **extra: Any
    ) -> dict[str, Any]:
        out = {pngmeta.KEY: __version__, "run": str(self.path), "edit": kind, "source": source.get("id")}
        return out | ({"seed": seed} if seed is not None else {}) | extra

    def variations(
        self, image: Tensor, source: dict[str, Any], num: int, seed: int, num_steps: int, guidance: float
    ) -> list[Image]:
        """Images that share the source's embedding y, one new x_T per seed (vcdm.editing.variations)."""
        from vcdm.editing import embed, variations

        pipe = self._two_stage("variations")
        seeds = list(range(seed, seed + num))
        out = variations(pipe, embed(pipe, image[None]), seeds, num_steps=num_steps, guidance=guidance)
        return [(img, self._edit_params("variations", source, s, num_steps=num_steps, guidance=guidance))
                for img, s in zip(out.cpu(), seeds)]  # fmt: skip

    def invert(self, image: Tensor, source: dict[str, Any], num_steps: int) -> list[Image]:
        """The source's latent (y, x_T) decoded back: its reconstruction, with the PSNR (vcdm.editing.invert)."""
        from vcdm.editing import invert, psnr, reconstruct

        pipe = self._two_stage("inversion")
        y, x_T = invert(pipe, image[None], num_steps=num_steps)
        recon = reconstruct(pipe, y, x_T, num_steps=num_steps).cpu()
        db = float(psnr(recon, image[None].float()))
        return [(recon[0], self._edit_params("invert", source, None, num_steps=num_steps, psnr=round(db, 2)))]

    def interpolate(
        self, a: Tensor, b: Tensor, sources: tuple[dict, dict], frames: int, num_steps: int
    ) -> list[Image]:
        """frames images from a to b: both inverted, (y, x_T) slerped, decoded (vcdm.editing.interpolate)."""
        from vcdm.editing import interpolate

        out = interpolate(self._two_stage("interpolation"), a, b, frames, num_steps=num_steps).cpu()
        return [(img, self._edit_params("interpolate", sources[0], None, to=sources[1].get("id"), frame=i,
                                        frames=frames, num_steps=num_steps)) for i, img in enumerate(out)]  # fmt: skip

    def upsample(
        self, image: Tensor, source: dict[str, Any], seed: int, num_steps: int, sampler: str
    ) -> list[Image]:
        """The source upsampled by the run's upsampler, as a cascade would (Pipeline.upsample)."""
        pipe = self.upsampler()
        s = replace(self.cfg.sample, upsampler_num_steps=num_steps, upsampler_sampler=sampler)
        out = pipe.upsample(image[None], [seed], s)
        return [(out[0], self._edit_params("upsample", source, seed, num_steps=num_steps, sampler=sampler))]

    def sdedit(
        self, image: Tensor, source: dict[str, Any], strength: float, num: int, seed: int, num_steps: int,
        sampler: str,
    ) -> list[Image]:  # fmt: skip
        """SDEdit from the source (a sketch): noised to the level `strength` of the way up the grid (0: the
        source itself, 1: the top of the grid), then denoised (vcdm.editing.sdedit)."""
        from vcdm.editing import sdedit
        from vcdm.pipeline import sampling_sigmas

        pipe = self.edit_pipe()
        grid = sampling_sigmas(pipe.decoder_diffusion, num_steps)
        sigma_0 = float(grid[round((1 - strength) * num_steps)])
        seeds = list(range(seed, seed + num))
        out = sdedit(pipe, image[None], sigma_0, seeds, sampler=sampler, num_steps=num_steps).cpu()
        return [(img, self._edit_params("sdedit", source, s, strength=strength, num_steps=num_steps,
                                        sampler=sampler)) for img, s in zip(out, seeds)]  # fmt: skip

    def inpaint(
        self, image: Tensor, mask: Tensor, source: dict[str, Any], num: int, seed: int, num_steps: int
    ) -> list[Image]:
        """Fill the mask (1 = to fill) with the run's Palette model, else RePaint on its image stage."""
        from vcdm.editing import inpaint

        palette = self.palette()
        model = palette if palette is not None else self.edit_pipe()
        seeds = list(range(seed, seed + num))
        out = inpaint(model, image[None], mask[None], seeds, num_steps=num_steps).cpu()
        method = "palette" if palette is not None else "repaint"
        return [(img, self._edit_params("inpaint", source, s, method=method, num_steps=num_steps))
                for img, s in zip(out, seeds)]  # fmt: skip

    def _two_stage(self, what: str) -> Any:
        if not self.info()["editing"]:
            raise VcdmError(f"{what} needs a two-stage run (a decoder conditioned on embeddings and its "
                            f"embedder); run {self.name} has {sorted(self.pipes)}")  # fmt: skip
        return self.pipes["decoder"]
