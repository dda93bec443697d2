"""`vcdm edit`: invert, variations, interpolate, embed-edit, sdedit, ilvr, inpaint, uncrop, colorize on a
trained run.

Parse, read the images, call vcdm.editing, write PNGs. The sampler and step count default to the run's
`sample` config (sample.sampler, sample.num_steps), as for `vcdm sample`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vcdm.cli.common import positive, read_images
from vcdm.errors import VcdmError

if TYPE_CHECKING:  # torch loads inside the handlers, after vcdm.cli.main has set OMP_WAIT_POLICY
    from torch import Tensor

EDIT_COMMANDS = ("invert", "variations", "interpolate", "embed-edit", "sdedit", "ilvr", "inpaint", "uncrop",
                 "colorize")  # fmt: skip
LATENT_FILE = "latent.safetensors"

_DESCRIPTIONS = {
    "edit": """Edit images with a trained two-stage run through its bipartite latent (y, x_T): y is an image's
embedding, x_T the noise that deterministic DDIM decodes to the image under y (`vcdm edit invert` finds it).
IMAGE arguments are image files (PNG, JPEG, ...), converted to the run's image size and channels. Each
command writes one PNG per output and grid.png into --out (default RUN/edits/COMMAND).""",
    "invert": f"""DDIM-invert images under their own embeddings and decode them back. Writes the inputs and
reconstructions (grid.png: inputs above reconstructions), psnr.json, and {LATENT_FILE} (y and x_T) for the
other edit commands (--latent).""",
    "variations": """Image variations (DALL-E 2): the embedding y of IMAGE (or of a latent) decoded with one
new noise x_T per seed.""",
    "interpolate": """Invert two images (or take entries 0 and 1 of --latent), slerp both y and x_T, and
decode a row of frames; the first and last frames reconstruct the inputs.""",
    "embed-edit": """Decode (y + s * direction, x_T) for each strength s, keeping the image's x_T. The
direction is a difference of mean normalised embeddings: of two classes of the run's dataset (--classes),
of two image sets (--from-images / --to-images), or of two texts (--texts; CLIP embedders only).
Strength 1 moves y by the whole difference.""",
    "text-diff": """Text diffs (DALL-E 2, Sec. 3.3): invert IMAGE to (y, x_T), rotate y toward the difference of
the CLIP text embeddings of --to and --from (slerp by each --strengths theta in [0, 1]) and decode with the same
x_T, so theta 0 reconstructs the image. Needs y to be CLIP image embeddings (embedder.kind clip-trained).
grid.png: one row per image, one column per theta.""",
    "sdedit": """SDEdit (Meng et al. 2022): x = IMAGE + sigma_0 * n, then the sampler runs on the part of the
grid below sigma_0. Small sigma_0 keeps the image; large sigma_0 keeps only its rough layout, and at the
grid's top (80 for EDM models) nothing of it. grid.png: one row per seed, one column per sigma_0.""",
    "ilvr": """ILVR (Choi et al. 2021): after each step the sample's low-pass part (average-pool by N, then
upsample) is replaced by that of the reference noised to the same level. N = 1 copies the reference; larger
N keeps only its coarse structure. grid.png: one row per seed, one column per factor.""",
    "inpaint": """Fill the white part of MASK (a PNG of the image's size; white = to fill) in IMAGE. --method
palette uses the run's Palette model (vcdm train palette RUN --set palette.task=inpaint); --method repaint
(RePaint, Lugmayr et al. 2022) uses any image model of the run: the single-stage baseline, or the two-stage
decoder with y drawn from the prior or embedded from the visible part (--cond). RePaint resamples
(--resamplings, --jump-length) at the cost of more network calls. Known pixels are kept exactly.
grid.png: the input with its hole, then one output per seed.""",
    "uncrop": """Extend IMAGE outward: fill a band of --width (a fraction of the side) along --side, with the
run's Palette model (trained with palette.task=uncrop or inpaint) or with RePaint (see `vcdm edit inpaint`).""",
    "colorize": """Colourise IMAGE (its grayscale is the condition) with the run's Palette model trained with
palette.task=colorize on RGB data. grid.png: the grayscale input, then one output per seed.""",
}


# ---- parser ----


def _common(p: argparse.ArgumentParser, steps_from_latent: bool = False) -> None:
    latent = " or the latent's" if steps_from_latent else ""
    p.add_argument("run", metavar="RUN", help="run directory with trained stages (vcdm demo / vcdm train)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: RUN/edits/COMMAND)")
    p.add_argument("--force", action="store_true", help="overwrite an output directory that holds files")
    p.add_argument(
        "--steps", type=int, metavar="N", help=f"sampling steps (default:{latent} the run's sample.num_steps)"
    )
    p.add_argument("--guidance", type=float, default=1.0, help="decoder classifier-free guidance weight "
                   "(1 = as trained, the default)")  # fmt: skip


def _fixed_point(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fixed-point-iters", type=int, default=3, metavar="K",
                   help="fixed-point refinements per inversion step: each costs a network call and makes "
                   "the inversion exact (default: 3)")  # fmt: skip


def _latent_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", nargs="?", help="the image file (or give --latent)")
    p.add_argument("--latent", metavar="FILE", help=f"a {LATENT_FILE} written by `vcdm edit invert`, "
                   "instead of IMAGE")  # fmt: skip
    p.add_argument("--index", type=int, default=0, help="which entry of --latent to use (default: 0)")


def _seeds(p: argparse.ArgumentParser, num: int) -> None:
    p.add_argument("--num", type=int, default=num, help=f"outputs per setting, one per seed (default: {num})")
    p.add_argument("--seed", type=int, default=0, help="first seed; seeds SEED..SEED+NUM-1 (default: 0)")


def _guided(p: argparse.ArgumentParser, image: str) -> None:
    _common(p)
    p.add_argument("image", metavar="IMAGE", help=f"the {image} image file")
    _seeds(p, 4)
    from vcdm.samplers import SAMPLERS

    p.add_argument("--sampler", choices=tuple(SAMPLERS), help="sampler (default: the run's sample.sampler)")
    p.add_argument("--stage", choices=("decoder", "baseline"), default="decoder", help="decoder: the "
                   "two-stage model (default); baseline: the single-stage one")  # fmt: skip
    p.add_argument("--cond", choices=("prior", "image"), default="prior",
                   help="the two-stage decoder's y: prior = drawn from the prior with each seed (default); "
                   "image = IMAGE's own embedding")  # fmt: skip


def add_parser(subparsers: Any) -> None:
    """Add `vcdm edit {invert,variations,interpolate,embed-edit,sdedit,ilvr} RUN ...` to vcdm's subparsers."""

    def add(name: str, help: str, parent: Any) -> argparse.ArgumentParser:
        fmt = argparse.RawDescriptionHelpFormatter
        return parent.add_parser(name, help=help, description=_DESCRIPTIONS[name], formatter_class=fmt)

    edit = add("edit", "edit images with a trained run: invert, variations, interpolate, embed-edit, sdedit, "
               "ilvr, inpaint, uncrop, colorize", subparsers)  # fmt: skip
    edit.set_defaults(handler=run)
    sub = edit.add_subparsers(dest="edit_command", required=True, metavar="EDIT")

    p = add("invert", "find (y, x_T) of images, decode them back, report PSNR", sub)
    _common(p)
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files to invert")
    _fixed_point(p)

    p = add("variations", "keep an image's y, decode it with new noise x_T", sub)
    _common(p, steps_from_latent=True)
    _latent_source(p)
    _seeds(p, 8)

    p = add("interpolate", "frames between two images (slerp of y and of x_T)", sub)
    _common(p, steps_from_latent=True)
    p.add_argument("images", metavar="IMAGE", nargs="*", help="two image files (or give --latent)")
    p.add_argument("--latent", metavar="FILE", help=f"a {LATENT_FILE} with at least two entries")
    p.add_argument("--frames", type=int, default=8, help="number of frames, ends included (default: 8)")
    _fixed_point(p)

    p = add("embed-edit", "move an image's y along a direction, keeping its x_T", sub)
    _common(p, steps_from_latent=True)
    _latent_source(p)
    _fixed_point(p)
    p.add_argument("--classes", type=int, nargs=2, metavar=("FROM", "TO"), help="class indices of the run's "
                   "dataset: the direction from class FROM to class TO")  # fmt: skip
    p.add_argument("--from-images", nargs="+", metavar="IMAGE", help="images the direction points away from")
    p.add_argument("--to-images", nargs="+", metavar="IMAGE", help="images the direction points toward")
    p.add_argument("--texts", nargs=2, metavar=("FROM", "TO"), help="two texts (CLIP embedders only)")
    p.add_argument("--strengths", type=float, nargs="+", default=[-1, -0.5, 0, 0.5, 1, 1.5], metavar="S",
                   help="multiples of the direction (default: -1 -0.5 0 0.5 1 1.5)")  # fmt: skip

    p = add("text-diff", "edit images with words: rotate y toward a caption change, keeping x_T", sub)
    _common(p)
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files to edit")
    p.add_argument("--from", dest="text_from", required=True, metavar="TEXT", help="what the image shows")
    p.add_argument("--to", dest="text_to", required=True, metavar="TEXT", help="what it should show")
    p.add_argument("--strengths", type=float, nargs="+", default=[0, 0.1, 0.2, 0.3, 0.4, 0.5], metavar="THETA",
                   help="rotations toward the text diff, in [0, 1] (default: 0 0.1 0.2 0.3 0.4 0.5)")  # fmt: skip
    _fixed_point(p)

    p = add("sdedit", "noise an image to sigma_0 and denoise it (SDEdit)", sub)
    _guided(p, "guide")
    p.add_argument("--sigma0", type=float, nargs="+", default=[0.5, 1.0, 2.0, 5.0], metavar="SIGMA",
                   help="starting noise levels, images being in [-1, 1] (default: 0.5 1 2 5)")  # fmt: skip

    p = add("ilvr", "sample while pulling low frequencies toward a reference (ILVR)", sub)
    _guided(p, "reference")
    p.add_argument("--factor", type=int, nargs="+", default=[2, 4, 7], metavar="N",
                   help="downsampling factors; each must divide the image size (default: 2 4 7)")  # fmt: skip
    p.add_argument("--sigma-stop", type=float, default=0.0, metavar="SIGMA",
                   help="correct only down to this noise level, leaving the last steps to the model "
                   "(smooths the flat patches a large N leaves; default: 0, every step)")  # fmt: skip

    p = add("inpaint", "fill the white part of a mask (Palette or RePaint)", sub)
    _filling(p, masks=True)
    p.add_argument("--mask", required=True, metavar="MASK", help="PNG of the image's size, white = to fill")

    p = add("uncrop", "extend an image outward (Palette or RePaint)", sub)
    _filling(p, masks=True)
    from vcdm.data.masks import UNCROP_SIDES

    p.add_argument("--side", choices=UNCROP_SIDES, default="right", help="where to extend (default: right)")
    p.add_argument("--width", type=float, default=0.25, help="the band's width as a fraction of the side "
                   "(default: 0.25)")  # fmt: skip

    p = add("colorize", "colourise a grayscale image (Palette)", sub)
    _filling(p, masks=False)


def _filling(p: argparse.ArgumentParser, masks: bool) -> None:
    """inpaint / uncrop / colorize: RUN IMAGE, seeds, sampler, and for masks the method and RePaint's options."""
    _common(p)
    p.add_argument("image", metavar="IMAGE", help="the image file")
    _seeds(p, 4)
    from vcdm.samplers import SAMPLERS

    p.add_argument("--sampler", choices=tuple(SAMPLERS), help="sampler (default: the run's sample.sampler)")
    p.add_argument(
        "--label", type=int, help="class of a Palette model conditioned on labels (palette.condition)"
    )
    if not masks:
        return
    p.add_argument("--method", choices=("palette", "repaint"), help="palette: the run's Palette model; repaint: "
                   "RePaint with --stage (default: palette when the run has one, else repaint)")  # fmt: skip
    p.add_argument("--stage", choices=("decoder", "baseline"), default="baseline", help="RePaint's model: "
                   "baseline = the single-stage model (default); decoder = the two-stage one")  # fmt: skip
    p.add_argument("--cond", choices=("prior", "masked", "filled"), default="filled", help="the two-stage "
                   "decoder's y: filled = the embedding of the image with its holes blur-filled (default: the best "
                   "in bench/inpainting.py); masked = of the visible part, holes grey; prior = drawn with each "
                   "seed")  # fmt: skip
    p.add_argument("--resamplings", type=int, default=1, metavar="R", help="RePaint: times each stretch of "
                   "--jump-length steps is run (1 = no resampling, the default; cost grows about R-fold)")  # fmt: skip
    p.add_argument("--jump-length", type=int, default=3, metavar="J", help="RePaint: steps between jumps "
                   "back (default: 3)")  # fmt: skip


# ---- helpers ----


def _sample_defaults(args: argparse.Namespace) -> tuple[int, str]:
    """(steps, sampler): --steps / --sampler, else the run's sample config."""
    from vcdm.runs import RunDir

    cfg = RunDir(args.run).load_config().sample
    return args.steps or cfg.num_steps, getattr(args, "sampler", None) or cfg.sampler


def _output_dir(args: argparse.Namespace) -> Path:
    """The output directory; refuses a non-empty one without --force before any work is done."""
    from vcdm.runs import RunDir, guard_output

    out = Path(args.out) if args.out else RunDir(args.run).edits(args.edit_command)
    if not args.force:
        guard_output(out, False, "edits")
    return out


def _pipeline(args: argparse.Namespace, stage: str = "decoder"):
    from vcdm.editing import load_pipeline
    from vcdm.pipeline import Pipeline
    from vcdm.training import distributed as dist

    if stage == "baseline":
        return Pipeline.from_run(args.run, "baseline", device=dist.device())
    return load_pipeline(args.run, device=dist.device())


def _latent(args: argparse.Namespace, pipe, indices: list[int]) -> tuple[Tensor, Tensor, int | None]:
    """(y, x_T, num_steps it was inverted with) of entries `indices` of --latent, checked against the run."""
    from vcdm.editing import load_latent

    y, x_T, meta = load_latent(args.latent)
    if tuple(x_T.shape[1:]) != tuple(pipe.latent_shape) or y.shape[1] != pipe.stats.mean.shape[0]:
        raise VcdmError(
            f"{args.latent}: latents of shape {tuple(y.shape)}, {tuple(x_T.shape)} do not fit "
            f"this run (x_T {tuple(pipe.latent_shape)}, embeddings {pipe.stats.mean.shape[0]})"
        )
    for i in indices:
        if not 0 <= i < len(y):
            raise VcdmError(f"--index {i}: {args.latent} holds {len(y)} latents")
    steps = int(meta["num_steps"]) if meta.get("num_steps", "").isdigit() else None
    return y[indices], x_T[indices], steps


def _write(args: argparse.Namespace, out: Path, images: Tensor, names: list[str], nrow: int) -> None:
    """Clear `out` (with --force), then write one PNG per image and grid.png."""
    from vcdm.data import save_grid, save_images
    from vcdm.runs import guard_output

    guard_output(out, args.force, "edits")
    out.mkdir(parents=True, exist_ok=True)
    save_images(images, out, names)
    save_grid(images, out / "grid.png", nrow=nrow)


def _stem(path: str, i: int) -> str:
    return f"{i:02d}_{Path(path).stem}"


# ---- commands ----


def cmd_invert(args: argparse.Namespace) -> None:
    import torch

    from vcdm.editing import invert, psnr, reconstruct, save_latent
    from vcdm.fileio import atomic_write_text

    steps = _sample_defaults(args)[0]
    positive("--steps", steps)
    positive("--fixed-point-iters", args.fixed_point_iters, 0)
    pipe = _pipeline(args)
    images = read_images(args.images, pipe.image_shape).to(pipe.device)
    out = _output_dir(args)
    y, x_T = invert(pipe, images, num_steps=steps, fixed_point_iters=args.fixed_point_iters)
    recon = reconstruct(pipe, y, x_T, num_steps=steps, guidance=args.guidance)
    scores = psnr(recon, images).tolist()
    names = [_stem(p, i) for i, p in enumerate(args.images)]
    files = [f"input_{n}" for n in names] + [f"recon_{n}" for n in names]
    _write(args, out, torch.cat([images, recon]).cpu(), files, nrow=len(images))
    meta = {
        "run": str(args.run),
        "num_steps": steps,
        "fixed_point_iters": args.fixed_point_iters,
        "images": json.dumps(list(args.images)),
    }
    save_latent(out / LATENT_FILE, y, x_T, meta)
    report = {
        "num_steps": steps,
        "fixed_point_iters": args.fixed_point_iters,
        "psnr_db": dict(zip(args.images, scores)),
    }
    atomic_write_text(out / "psnr.json", json.dumps(report, indent=2) + "\n")
    for path, score in zip(args.images, scores):
        print(f"{path}: PSNR {score:.1f} dB")
    print(f"wrote reconstructions, psnr.json and {LATENT_FILE} to {out}")


def _source_latent(args: argparse.Namespace, pipe, *, need_x_T: bool) -> tuple[Tensor, Tensor | None, int]:
    """y (1, D) (and x_T) from IMAGE or --latent, and the decoding steps."""
    from vcdm.editing import embed, invert

    if (args.image is None) == (args.latent is None):
        raise VcdmError("give exactly one of IMAGE and --latent")
    if args.latent is not None:
        y, x_T, steps = _latent(args, pipe, [args.index])
        return y.to(pipe.device), x_T.to(pipe.device), args.steps or steps or _sample_defaults(args)[0]
    steps = _sample_defaults(args)[0]
    image = read_images([args.image], pipe.image_shape).to(pipe.device)
    if not need_x_T:
        return embed(pipe, image), None, steps
    y, x_T = invert(pipe, image, num_steps=steps, fixed_point_iters=args.fixed_point_iters)
    return y, x_T, steps


def cmd_variations(args: argparse.Namespace) -> None:
    from vcdm.editing import variations

    positive("--num", args.num)
    positive("--steps", args.steps)
    pipe = _pipeline(args)
    y, _, steps = _source_latent(args, pipe, need_x_T=False)
    out = _output_dir(args)
    seeds = list(range(args.seed, args.seed + args.num))
    images = variations(pipe, y, seeds, num_steps=steps, guidance=args.guidance)
    _write(args, out, images.cpu(), [f"seed{s:06d}" for s in seeds], nrow=min(8, len(seeds)))
    print(f"wrote {len(seeds)} variations to {out}")


def cmd_interpolate(args: argparse.Namespace) -> None:
    from vcdm.editing import interpolate, interpolate_latents

    positive("--frames", args.frames, 2)
    positive("--steps", args.steps)
    pipe = _pipeline(args)
    if args.latent is not None and not args.images:
        y, x_T, steps = _latent(args, pipe, [0, 1])
        steps = args.steps or steps or _sample_defaults(args)[0]
        frames = interpolate_latents(
            pipe, y.to(pipe.device), x_T.to(pipe.device), args.frames, num_steps=steps, guidance=args.guidance
        )
    elif args.latent is None and len(args.images) == 2:
        images = read_images(args.images, pipe.image_shape).to(pipe.device)
        frames = interpolate(
            pipe,
            images[0],
            images[1],
            args.frames,
            num_steps=_sample_defaults(args)[0],
            fixed_point_iters=args.fixed_point_iters,
            guidance=args.guidance,
        )
    else:
        raise VcdmError("give either two IMAGE files or --latent FILE")
    out = _output_dir(args)
    _write(args, out, frames.cpu(), [f"frame{i:02d}" for i in range(args.frames)], nrow=args.frames)
    print(f"wrote {args.frames} frames to {out}")


def _direction(args: argparse.Namespace, pipe) -> Tensor:
    from vcdm.data import load_dataset
    from vcdm.editing import direction_from_class_means, direction_from_images, direction_from_texts
    from vcdm.runs import RunDir

    given = [args.classes is not None, bool(args.from_images or args.to_images), args.texts is not None]
    if sum(given) != 1:
        raise VcdmError(
            "give exactly one direction: --classes FROM TO, --from-images/--to-images, or --texts"
        )
    if args.classes is not None:
        data = load_dataset(RunDir(args.run).load_config().data)
        return direction_from_class_means(pipe, data, *args.classes)
    if args.texts is not None:
        return direction_from_texts(pipe, *args.texts)
    if not (args.from_images and args.to_images):
        raise VcdmError("--from-images and --to-images must be given together")
    a = read_images(args.from_images, pipe.image_shape).to(pipe.device)
    b = read_images(args.to_images, pipe.image_shape).to(pipe.device)
    return direction_from_images(pipe, a, b)


def cmd_embed_edit(args: argparse.Namespace) -> None:
    from vcdm.editing import edit_embedding

    positive("--steps", args.steps)
    positive("--fixed-point-iters", args.fixed_point_iters, 0)
    pipe = _pipeline(args)
    direction = _direction(args, pipe)
    y, x_T, steps = _source_latent(args, pipe, need_x_T=True)
    out = _output_dir(args)
    edits = edit_embedding(pipe, y, x_T, direction, args.strengths, num_steps=steps, guidance=args.guidance)
    names = [f"strength{i:02d}_{s:+.2f}" for i, s in enumerate(args.strengths)]
    _write(args, out, edits[0].cpu(), names, nrow=len(args.strengths))
    print(f"wrote {len(args.strengths)} edits (|direction| = {float(direction.norm()):.2f}) to {out}")


def cmd_text_diff(args: argparse.Namespace) -> None:
    from vcdm.editing.text_diff import text_diff

    positive("--steps", args.steps)
    positive("--fixed-point-iters", args.fixed_point_iters, 0)
    pipe = _pipeline(args)
    steps, _ = _sample_defaults(args)
    out = _output_dir(args)
    images = read_images(args.images, pipe.image_shape)
    edits = text_diff(pipe, images, args.text_from, args.text_to, args.strengths, num_steps=steps,
                      guidance=args.guidance, fixed_point_iters=args.fixed_point_iters)  # fmt: skip
    names = [f"{_stem(p, i)}_theta{s:.2f}" for i, p in enumerate(args.images) for s in args.strengths]
    _write(args, out, edits.flatten(0, 1).cpu(), names, nrow=len(args.strengths))
    print(f"wrote {len(args.images)} x {len(args.strengths)} text-diff edits ({args.text_from!r} -> "
          f"{args.text_to!r}) to {out}")  # fmt: skip


def _guided_run(args: argparse.Namespace, settings: list, fn, label: str, **extra: Any) -> None:
    import torch

    positive("--num", args.num)
    positive("--steps", args.steps)
    pipe = _pipeline(args, args.stage)
    image = read_images([args.image], pipe.image_shape).to(pipe.device)
    out = _output_dir(args)
    seeds = list(range(args.seed, args.seed + args.num))
    steps, sampler = _sample_defaults(args)
    options = {"sampler": sampler, "num_steps": steps, "cond": args.cond, "guidance": args.guidance}
    columns = [fn(pipe, image, value, seeds, **options, **extra).cpu() for value in settings]  # (seeds, ...)
    grid = torch.stack(columns, dim=1).flatten(0, 1)  # (seeds * settings, C, H, W): a row per seed
    names = [f"seed{s:06d}_{label}{v:g}" for s in seeds for v in settings]
    _write(args, out, grid, names, nrow=len(settings))
    print(f"wrote {len(names)} images ({len(seeds)} seeds x {len(settings)} {label} values) to {out}")


def cmd_sdedit(args: argparse.Namespace) -> None:
    from vcdm.editing import sdedit

    for s in args.sigma0:
        if not s >= 0:
            raise VcdmError(f"--sigma0 values must be >= 0, got {s}")
    _guided_run(args, args.sigma0, sdedit, "sigma")


def cmd_ilvr(args: argparse.Namespace) -> None:
    from vcdm.editing import ilvr_sample

    _guided_run(args, args.factor, ilvr_sample, "factor", sigma_stop=args.sigma_stop)


def _fill_model(args: argparse.Namespace, method: str | None):
    """(model, method, image shape): the run's Palette model or the pipeline RePaint samples."""
    from vcdm.editing import load_palette
    from vcdm.runs import RunDir
    from vcdm.training import distributed as dist

    if method is None:
        method = "palette" if RunDir(args.run).stage_meta("palette") is not None else "repaint"
    if method == "palette":
        palette = load_palette(args.run, device=dist.device())
        return palette, method, palette.image_shape
    pipe = _pipeline(args, args.stage)
    return pipe, method, tuple(pipe.image_shape)


def _fill_run(args: argparse.Namespace, masks_for) -> None:
    """Shared by inpaint / uncrop / colorize: read IMAGE (and its mask), fill one output per seed, write."""
    import torch

    from vcdm.editing import colorize, inpaint

    positive("--num", args.num)
    positive("--steps", args.steps)
    method = getattr(args, "method", None) or (None if masks_for is not None else "palette")
    model, method, shape = _fill_model(args, method)
    image = read_images([args.image], shape).to(getattr(model, "device", "cpu"))
    masks = masks_for(shape[-1]).to(image.device) if masks_for is not None else None
    out = _output_dir(args)
    seeds = list(range(args.seed, args.seed + args.num))
    steps, sampler = _sample_defaults(args)
    options: dict[str, Any] = {"sampler": sampler, "num_steps": steps, "guidance": args.guidance}
    if method == "palette" and model.condition != "none":
        options["cond"] = _palette_cond(args, model, image, masks, len(seeds))
    if masks is None:
        filled, shown = colorize(model, image, seeds, **options), _gray(image)
    else:
        if method == "repaint":
            positive("--resamplings", args.resamplings)
            positive("--jump-length", args.jump_length)
            cond = args.cond if args.stage == "decoder" else None
            options |= {"cond": cond, "resamplings": args.resamplings, "jump_length": args.jump_length}
        filled, shown = inpaint(model, image, masks, seeds, **options), image * (1 - masks)
    names = ["input"] + [f"seed{s:06d}" for s in seeds]
    _write(args, out, torch.cat([shown, filled]).cpu(), names, nrow=len(names))
    print(f"wrote {len(seeds)} outputs ({method}) to {out}")


def _palette_cond(args: argparse.Namespace, palette, image, masks, n: int) -> dict:
    """y and / or the label of a Palette model conditioned on them: y embeds the input (its holes blur-filled, or
    its grayscale for colourisation) with the run's embedder; the label is --label."""
    import torch

    from vcdm.editing import embed, fill, load_pipeline

    cond = {}
    if "embedding" in palette.condition:
        visible = fill(image, masks, "blur") if masks is not None else _gray(image)
        cond["emb"] = embed(load_pipeline(args.run), visible).expand(n, -1)
    if "label" in palette.condition:
        if args.label is None:
            raise VcdmError(f"this Palette model is conditioned on {palette.condition!r}: give --label")
        cond["label"] = torch.full((n,), args.label, dtype=torch.long, device=image.device)
    return cond


def _gray(images):
    from vcdm.stages.palette import luma

    return luma(images).expand_as(images)


def cmd_inpaint(args: argparse.Namespace) -> None:
    from vcdm.data.masks import read_mask

    _fill_run(args, lambda size: read_mask(args.mask, size))


def cmd_uncrop(args: argparse.Namespace) -> None:
    from vcdm.data.masks import uncrop_mask

    if not 0 < args.width < 1:
        raise VcdmError(f"--width must be a fraction in (0, 1), got {args.width}")
    _fill_run(args, lambda size: uncrop_mask(size, args.side, args.width)[None])


def cmd_colorize(args: argparse.Namespace) -> None:
    _fill_run(args, None)


COMMANDS = {
    "invert": cmd_invert,
    "variations": cmd_variations,
    "interpolate": cmd_interpolate,
    "embed-edit": cmd_embed_edit,
    "sdedit": cmd_sdedit,
    "ilvr": cmd_ilvr,
    "inpaint": cmd_inpaint,
    "uncrop": cmd_uncrop,
    "colorize": cmd_colorize,
    "text-diff": cmd_text_diff,
}


def run(args: argparse.Namespace) -> None:
    """Handle `vcdm edit ...` (errors the user can fix are VcdmError)."""
    COMMANDS[args.edit_command](args)
