"""`vcdm sample`: two-stage or single-stage samples of a run, with every guidance the library offers, upsampled
by the run's upsampler when it has one (a cascade: the base samples go to OUT/low_res/).

Imported by vcdm.cli.main after OMP_WAIT_POLICY is set (it loads torch).

The guidance flags (classifier guidance with the run's noisy classifier, CLIP guidance, thresholding) become
one denoiser -> denoiser wrapper (`guidance_wrappers`) that the Pipeline applies to the decoder after
classifier-free guidance.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vcdm.cli.common import add_config_args, add_verb
from vcdm.config import RunConfig
from vcdm.data.images import conform_image, to_l_or_rgb
from vcdm.embedders import LearnedEmbedder
from vcdm.errors import VcdmError
from vcdm.guidance import (
    classifier_guidance,
    clip_guidance,
    clip_target,
    compose,
    dynamic_threshold,
    image_embed_fn,
    static_threshold,
)
from vcdm.guidance.clip import THROUGH
from vcdm.guidance.compose import Wrapper
from vcdm.runs import RunDir
from vcdm.stages import load_embedder, load_noisy_classifier

THRESHOLDS = ("none", "static", "dynamic")
LOW_RES = "low_res"  # OUT/low_res/: a cascade's base samples
CASCADE_FLAGS = ("upsampler_steps", "upsampler_sampler", "upsampler_guidance", "aug_sigma")  # argparse dests
DEFAULT_PERCENTILE = 0.995
SAMPLE_DEFAULTS: dict[str, Any] = {}  # dest -> default of `vcdm sample`'s flags (--from-png fills those left)


def add_guidance_args(parser: argparse.ArgumentParser) -> None:
    """Add the classifier / CLIP guidance and thresholding flags to `vcdm sample`."""
    g = parser.add_argument_group("guidance of the image decoder (applied after classifier-free guidance)")
    g.add_argument("--classifier-scale", type=float, default=0.0, metavar="S",
                   help="classifier guidance scale s (Dhariwal & Nichol 2021) toward --label, with the noisy "
                   "classifier of `vcdm train noisy-classifier RUN`; 0 = off (default: 0)")  # fmt: skip
    g.add_argument("--clip-scale", type=float, default=0.0, metavar="S",
                   help="CLIP guidance scale toward --clip-target-image or --clip-target-text, through the "
                   "run's embedder; 0 = off (default: 0)")  # fmt: skip
    g.add_argument("--clip-target-image", metavar="PATH", help="image whose embedding CLIP guidance targets")
    g.add_argument(
        "--clip-target-text",
        metavar="TEXT",
        help="prompt whose embedding CLIP guidance targets (CLIP embedders)",
    )
    g.add_argument("--clip-through", choices=THROUGH, default="x0",
                   help="x0: gradient through the decoder (exact); denoised: a step on the denoised image "
                   "only (cheaper) (default: x0)")  # fmt: skip
    g.add_argument("--threshold", choices=THRESHOLDS, default="none",
                   help="clip the denoised image at every step: static (to [-1, 1]) or dynamic (Imagen) "
                   "(default: none)")  # fmt: skip
    g.add_argument(
        "--threshold-percentile",
        type=float,
        metavar="P",
        help=f"dynamic thresholding's percentile in (0, 1] (default: {DEFAULT_PERCENTILE})",
    )


def _arg(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


def load_target_image(path: str | Path, embedder: object) -> torch.Tensor:
    """Read a target image as (1, C, H, W) float32 in [-1, 1], fitted to a learned embedder's input size."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = to_l_or_rgb(img)
    except Exception as e:  # PIL raises many types on unreadable files
        raise VcdmError(f"--clip-target-image: cannot read {path} ({type(e).__name__}: {e})") from None
    if isinstance(embedder, LearnedEmbedder):
        enc = embedder.encoder.cfg
        pixels = conform_image(img, enc.image_size, enc.in_channels)
    else:
        pixels = conform_image(img, None, 1 if img.mode == "L" else 3)
    return torch.from_numpy(np.array(pixels)).float()[None] / 127.5 - 1


def _classifier_wrapper(args: argparse.Namespace, device: torch.device | str) -> Wrapper | None:
    scale = _arg(args, "classifier_scale", 0.0) or 0.0
    if scale == 0:
        return None
    if scale < 0:
        raise VcdmError(f"--classifier-scale must be >= 0, got {scale}")
    if _arg(args, "label") is None:
        raise VcdmError("--classifier-scale needs --label: the class to guide toward")
    classifier, sigma_data = load_noisy_classifier(args.run, device)
    label, num_classes = int(args.label), classifier.cfg.num_classes
    if not 0 <= label < num_classes:
        raise VcdmError(f"--label must be in [0, {num_classes - 1}] for the noisy classifier, got {label}")
    return lambda d: classifier_guidance(d, classifier, label, scale, sigma_data=sigma_data)


def _clip_wrapper(
    args: argparse.Namespace, cfg: RunConfig | None, device: torch.device | str
) -> Wrapper | None:
    scale = _arg(args, "clip_scale", 0.0) or 0.0
    image, text = _arg(args, "clip_target_image"), _arg(args, "clip_target_text")
    if scale == 0:
        if image is not None or text is not None:
            raise VcdmError("--clip-target-image / --clip-target-text need --clip-scale S (S > 0)")
        return None
    if scale < 0:
        raise VcdmError(f"--clip-scale must be >= 0, got {scale}")
    if (image is None) == (text is None):
        raise VcdmError(
            "--clip-scale needs exactly one of --clip-target-image PATH or --clip-target-text TEXT"
        )
    cfg = cfg or RunDir(args.run).load_config()
    embedder = load_embedder(args.run, cfg)
    if embedder is None:
        raise VcdmError(f"--clip-scale needs an image embedder, but embedder.kind is {cfg.embedder.kind!r}")
    if isinstance(embedder, LearnedEmbedder):
        embedder.encoder.to(device)
    target = clip_target(embedder, text=text) if text is not None else None
    if image is not None:
        target = clip_target(embedder, image=load_target_image(image, embedder))
    embed_fn, through = image_embed_fn(embedder), _arg(args, "clip_through", "x0")
    return lambda d: clip_guidance(d, embed_fn, target.to(device), scale, through=through)


def _threshold_wrapper(args: argparse.Namespace) -> Wrapper | None:
    kind, percentile = _arg(args, "threshold", "none") or "none", _arg(args, "threshold_percentile")
    if kind not in THRESHOLDS:
        raise VcdmError(f"--threshold must be one of {THRESHOLDS}, got {kind!r}")
    if percentile is not None and kind != "dynamic":
        raise VcdmError("--threshold-percentile applies only to --threshold dynamic")
    if kind == "static":
        return static_threshold
    if kind == "dynamic":
        p = DEFAULT_PERCENTILE if percentile is None else percentile
        if not 0 < p <= 1:
            raise VcdmError(f"--threshold-percentile must be in (0, 1], got {p}")
        return lambda d: dynamic_threshold(d, p)
    return None


def guidance_wrappers(
    args: argparse.Namespace, cfg: RunConfig | None = None, *, device: torch.device | str = "cpu"
) -> Wrapper:
    """The decoder wrapper that `vcdm sample`'s guidance flags ask for: classifier guidance, then CLIP
    guidance, then thresholding (last, so it bounds the final x0_hat); the identity when none is set.

    Args:
        args: the `sample` namespace (run, label, and the flags of `add_guidance_args`).
        cfg: the run's resolved config (for the embedder); None reads RUN/config.json.
        device: where the classifier / embedder run (the decoder's device).
    Returns:
        a function denoiser -> denoiser, to apply after classifier-free guidance.
    """
    return compose(
        _classifier_wrapper(args, device), _clip_wrapper(args, cfg, device), _threshold_wrapper(args)
    )


def uses_label_for_guidance_only(args: argparse.Namespace, class_conditional: bool) -> bool:
    """True when --label only steers classifier guidance (the model itself takes no label): the Pipeline
    must then be called with labels=None."""
    return (_arg(args, "classifier_scale", 0.0) or 0.0) > 0 and not class_conditional


def add_upsampler_args(parser: argparse.ArgumentParser, *, cascade: bool = True) -> None:
    """The upsampler's sampling flags (`vcdm sample` on a cascade, `vcdm upsample`)."""
    from vcdm.samplers import SAMPLERS

    g = parser.add_argument_group(
        "the upsampler" + (" (runs with RUN/upsampler: a cascade)" if cascade else "")
    )
    steps, sampler = ("--upsampler-steps", "--upsampler-sampler") if cascade else ("--steps", "--sampler")
    g.add_argument(steps, dest="upsampler_steps", type=int, metavar="N",
                   help="upsampler sampling steps (default: sample.upsampler_num_steps)")  # fmt: skip
    g.add_argument(sampler, dest="upsampler_sampler", choices=tuple(SAMPLERS),
                   help="upsampler sampler (default: sample.upsampler_sampler)")  # fmt: skip
    g.add_argument("--upsampler-guidance" if cascade else "--guidance", dest="upsampler_guidance", type=float,
                   metavar="W", help="classifier-free weight of the upsampler's y / label condition (the low-res "
                   "image is never dropped; default: sample.upsampler_guidance)")  # fmt: skip
    g.add_argument("--aug-sigma", dest="aug_sigma", type=float, metavar="S",
                   help="noise level added to the low-res images before upsampling (conditioning augmentation; "
                   "0 = none; default: sample.upsampler_aug_sigma, else the upsampler's "
                   "upsampler.augment.sample_sigma)")  # fmt: skip
    if cascade:
        g.add_argument("--no-upsampler", action="store_true", help="sample the base stage alone")


def upsampler_settings(args: argparse.Namespace) -> dict[str, Any]:
    """SampleConfig fields given by the flags of `add_upsampler_args` (those not given are left out)."""
    given = {"upsampler_num_steps": args.upsampler_steps, "upsampler_sampler": args.upsampler_sampler,
             "upsampler_guidance": args.upsampler_guidance, "upsampler_aug_sigma": args.aug_sigma}  # fmt: skip
    return {k: v for k, v in given.items() if v is not None}


def add_parser(sub: Any) -> None:
    from vcdm.samplers import SAMPLERS

    p = add_verb(sub, "sample", "sample images (two-stage, or single-stage with --stage baseline)",
                 "Write one PNG per sample and grid.png. Each image depends only on its seed (seeds "
                 "SEED..SEED+NUM-1), not on the batch size or the number of processes. When the run has an "
                 "upsampler (`vcdm train upsampler`) and the stage samples at its low_res, the samples are "
                 "upsampled (a cascade) and the base samples are written to OUT/low_res/ as well.")  # fmt: skip
    p.add_argument("run", metavar="RUN", nargs="?", help="run directory with trained stages (with --from-png: "
                   "default the run the PNG names)")  # fmt: skip
    p.add_argument("--from-png", metavar="FILE", help="redraw a PNG written by vcdm (its run, stage, seed, "
                   "steps, samplers and guidance; flags given here override them)")  # fmt: skip
    p.add_argument("--stage", default="decoder", choices=("decoder", "baseline"),
                   help="decoder: two-stage (prior then decoder); baseline: the single-stage model (default: decoder)")  # fmt: skip
    p.add_argument("--num", type=int, default=16, help="number of samples (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    p.add_argument("--steps", type=int, help="decoder sampling steps (default: sample.num_steps)")
    p.add_argument("--prior-steps", type=int, help="prior sampling steps (default: sample.prior_num_steps)")
    p.add_argument("--sampler", choices=tuple(SAMPLERS), help="decoder sampler (default: sample.sampler)")
    p.add_argument("--guidance", type=float, help="decoder classifier-free guidance weight; 1 = conditional model, "
                   "0 = unconditional, >1 = stronger condition (default: sample.guidance)")  # fmt: skip
    p.add_argument("--prior-guidance", type=float, help="prior classifier-free guidance weight (class-conditional "
                   "priors; default: sample.prior_guidance)")  # fmt: skip
    p.add_argument("--label", type=int, help="class label for class-conditional stages")
    t = p.add_argument_group("text to image (runs with a text prior or a text-conditioned decoder)")
    t.add_argument("--prompt", action="append", metavar="TEXT", help="draw --num samples of this caption "
                   "(repeatable; seeds SEED..SEED+NUM-1 for each, so a sample depends on its prompt and seed)")  # fmt: skip
    t.add_argument("--prompts-file", metavar="FILE", help="more prompts, one a line (# comments skipped)")
    t.add_argument("--prior-candidates", type=int, metavar="K", help="draw K embeddings per sample and keep the "
                   "one closest to the caption in CLIP space (default: sample.prior_candidates)")  # fmt: skip
    p.add_argument("--out", help="output directory (default: RUN/samples/STAGE-seedSEED)")
    p.add_argument("--force", action="store_true", help="overwrite an output directory that holds files")
    add_upsampler_args(p)
    add_guidance_args(p)
    add_config_args(p)
    p.set_defaults(handler=run)
    SAMPLE_DEFAULTS.update({a.dest: a.default for a in p._actions})


def run(args: argparse.Namespace) -> None:
    from vcdm import pngmeta
    from vcdm.cli.common import run_config
    from vcdm.data import save_grid, save_images
    from vcdm.data.images import load_pngs
    from vcdm.pipeline import Pipeline
    from vcdm.runs import guard_output
    from vcdm.training import distributed as dist

    if args.from_png:
        png = pngmeta.read(args.from_png)
        pngmeta.fill_sample_args(args, png, SAMPLE_DEFAULTS)
        if "prompt" in png and not args.prompt and not args.prompts_file:  # text to image (vcdm.cli.text)
            args.prompt = [png["prompt"]]
        if args.prior_candidates is None:
            args.prior_candidates = png.get("prior_candidates")
    elif args.run is None:
        raise VcdmError("give RUN (or --from-png FILE)")
    cfg = run_config(args, args.run)
    given = {"num_steps": args.steps, "prior_num_steps": args.prior_steps, "sampler": args.sampler,
             "guidance": args.guidance, "prior_guidance": args.prior_guidance,
             "prior_sampler": getattr(args, "prior_sampler", None),
             "prior_candidates": getattr(args, "prior_candidates", None)}  # fmt: skip
    s = replace(cfg.sample, **{k: v for k, v in given.items() if v is not None}, **upsampler_settings(args))
    if args.num < 1:
        raise VcdmError(f"--num must be >= 1, got {args.num}")
    run_dir = RunDir(args.run)
    out = Path(args.out) if args.out else run_dir.samples(args.stage, args.seed)
    if dist.rank() == 0:
        guard_output(out, args.force, "samples")
    dist.barrier()
    device = dist.device()
    pipe = Pipeline.from_run(args.run, args.stage, device=device, upsampler=False if args.no_upsampler else None,
                             guidance={"decoder": guidance_wrappers(args, cfg, device=device)})  # fmt: skip
    flags = [f"--{k.replace('_', '-')}" for k in CASCADE_FLAGS if getattr(args, k) is not None]
    if pipe.upsampler is None and flags:
        raise VcdmError(f"{flags[0]} applies to a cascade, but {args.stage} is sampled without an upsampler")
    from vcdm.text.prompts import gather_prompts

    prompts = gather_prompts(args.prompt, args.prompts_file)
    if prompts or pipe.text_conditional:
        from vcdm.cli.text import sample_prompts

        return sample_prompts(args, pipe, s, prompts, out)
    labels = None if uses_label_for_guidance_only(args, pipe.class_conditional) else args.label
    # Under torchrun each process draws every world_size-th seed; an image depends only on its seed.
    seeds = list(range(args.seed, args.seed + args.num))
    mine = seeds[dist.rank() :: dist.world_size()]
    t0 = time.perf_counter()
    res = pipe(mine, s, labels=labels, progress=not args.no_progress)

    def meta(seed: int, **extra: Any) -> dict[str, Any]:  # the parameters each PNG carries (vcdm.pngmeta)
        cascade = pipe.upsampler is not None
        return pngmeta.params(args.run, args.stage, seed, s, cascade=cascade, label=args.label, **extra)

    for path, seed in zip(save_images(res.images, out, [f"{seed:06d}.png" for seed in res.seeds]), res.seeds):
        pngmeta.write(path, meta(seed))
    if res.low_res is not None:
        for path, seed in zip(
            save_images(res.low_res, out / LOW_RES, [f"{seed:06d}.png" for seed in res.seeds]), res.seeds
        ):
            pngmeta.write(path, meta(seed, part=LOW_RES))
    dist.barrier()
    if dist.rank() == 0:
        save_grid(load_pngs([out / f"{seed:06d}.png" for seed in seeds]), out / "grid.png")
        pngmeta.write(out / "grid.png", meta(args.seed, num=args.num))
        size = "x".join(map(str, pipe.output_shape[1:]))
        note = ""
        if pipe.upsampler is not None:
            save_grid(
                load_pngs([out / LOW_RES / f"{seed:06d}.png" for seed in seeds]), out / LOW_RES / "grid.png"
            )
            pngmeta.write(out / LOW_RES / "grid.png", meta(args.seed, num=args.num, part=LOW_RES))
            note = (
                f", upsampled from the {'x'.join(map(str, pipe.image_shape[1:]))} samples in {out / LOW_RES}"
            )
        print(
            f"wrote {args.num} {size} samples and grid.png to {out}{note} in {time.perf_counter() - t0:.1f} s"
        )
