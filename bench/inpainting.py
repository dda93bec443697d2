"""Inpainting, uncropping and colourisation benchmark: Palette, RePaint with the single-stage and the two-stage
model (y from the prior, from the visible part, and the full image's y as an oracle), and trivial fills, on the
same held-out images with the same fixed masks.

Run as `.venv/bin/python bench/inpainting.py --run RUN [--task inpaint|uncrop|colorize] [--num 500]
[--palette-steps 18] [--repaint 50:1 25:4] [--jump 5] [--guidance 1 2] [--report docs/inpainting/report.md]`.

RUN is a trained two-stage run (embedder, prior, decoder, baseline: `vcdm demo`). When it has no Palette export
for --task, one is trained first into RUN/palette with the decoder's U-Net and training budget (palette.net =
decoder.net, palette.train = decoder.train: the same network and images seen as the two diffusion arms).

Images: --num held-out images (MNIST: the first of eval.heldout_split; emoji: evenly spaced over its "test" split,
which is ordered by category; other data: the quality
benchmark's fixed split, vcdm.quality.benchmark.load_splits, which a run trained on all of it has seen), image i with
fixed mask i (vcdm.data.masks.fixed_masks, seed --mask-seed) and seed i for every method. Rows:

- fill mean / fill blur: the mean of the known pixels, or the known pixels diffused into the hole (1 NFE = 0).
- palette: the Palette model, --palette-sampler with --palette-steps (Heun: 2 network calls per step but the last),
  guidance 1; known pixels pasted back.
- repaint <model> <y>: RePaint (vcdm.editing.repaint_sample) with --repaint-sampler on each STEPS:RESAMPLINGS of
  --repaint (jump length --jump); <model> baseline (single-stage) or decoder (two-stage) with y from the prior
  ("prior", one per seed), embedded from the visible part ("masked": holes at mid-grey; "filled": holes filled by
  diffusing the known pixels in, the "fill blur" row), from the single-stage model's completion in the row above
  ("E(single-stage completion)": two RePaint passes, twice the NFE), or the embedding of the whole original
  ("oracle": not available in practice; the best y can do).

Scores: PSNR on the hole (10 log10(4 / MSE) over the filled pixels of each image, images in [-1, 1], averaged over
images); FID of the completed images against the reference set on the evaluation classifier's features
(vcdm.eval.scoring, the same classifier and reference as `vcdm demo`: compare values only among themselves, at
equal counts); consistency: the share of completions the evaluation classifier gives the original's class
(labelled data); NFE: network evaluations per image; seconds: the completion alone. The floor row scores the
held-out originals themselves. It prints a markdown table and writes it, with the command, to --report, and a
figure (originals, masked inputs, then one row per method) beside it.

--task colorize (RGB data): rows are the grayscale input itself (no colour) and the Palette colourisation model at
each classifier-free weight of --guidance; PSNR is over the whole image and "colour error" is the mean absolute
difference of the chroma (each channel minus the luma) from the original's, in 8-bit levels. Palette's known
failure here is collapse to one colour: the figure shows it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep (see bench/unet_speed.py)

import torch  # noqa: E402

from vcdm.data import ImageData, load_dataset, save_grid  # noqa: E402
from vcdm.data.masks import fixed_masks  # noqa: E402
from vcdm.editing import (  # noqa: E402
    embed,
    fill,
    load_palette,
    palette_sample,
    repaint_sample,
    repaint_walk,
    walk_steps,
)
from vcdm.errors import VcdmError, exit_status  # noqa: E402
from vcdm.eval.scoring import ClassifierExtractor, Reference, build_reference, get_classifier, score  # noqa: E402
from vcdm.fileio import atomic_write_text  # noqa: E402
from vcdm.pipeline import Pipeline  # noqa: E402
from vcdm.quality.benchmark import load_splits  # noqa: E402
from vcdm.runs import RunDir  # noqa: E402
from vcdm.stages import train_stage  # noqa: E402
from vcdm.stages.palette import luma  # noqa: E402


@dataclass
class Row:
    method: str
    nfe: int
    psnr: float | None
    fid: float
    consistency: float | None
    seconds: float
    colour_error: float | None = None


@dataclass
class Evaluation:
    """The held-out images every method completes, what they are scored against, and the rows so far."""

    held: ImageData  # the held-out originals
    images: torch.Tensor  # held's images in [-1, 1] (N, C, H, W)
    masks: torch.Tensor  # 1 on the pixels to fill (N, 1, H, W)
    extractor: ClassifierExtractor
    ref: Reference
    k: int  # precision / recall's neighbours (eval.k)
    colorizing: bool
    show: int  # images per row of the figure
    rows: list[Row] = field(default_factory=list)
    shown: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # (method, its first `show` outputs)

    def add(self, method: str, nfe: int, out: torch.Tensor, seconds: float) -> None:
        """Score one method's completions `out` (known pixels must be the originals') and print its row."""
        images, masks, labels = self.images, self.masks, self.held.labels
        keep = (masks < 0.5).expand_as(out)
        assert torch.equal(out[keep], images[keep]), f"{method} changed known pixels"
        s = score(out, self.extractor, self.ref, k=self.k)
        cons = None if labels is None else float((self.extractor.predict(out).cpu() == labels).float().mean())
        err = colour_error(out, images) if self.colorizing else None
        self.rows.append(Row(method, nfe, hole_psnr(out, images, masks), s["fid"], cons, seconds, err))
        self.shown.append((method, out[: self.show]))
        r = self.rows[-1]
        print(f"  {method}: NFE {nfe} PSNR {r.psnr:.2f} FID {r.fid:.2f} consistency {fmt(cons, '.3f')} "
              f"({seconds:.1f} s)", flush=True)  # fmt: skip


def hole_psnr(out: torch.Tensor, truth: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean over images of 10 log10(4 / MSE) on the pixels to fill."""
    m = masks.expand_as(out)
    sq = ((out.float() - truth.float()) ** 2 * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1)
    return float((10 * torch.log10(4.0 / sq.clamp(min=1e-10))).mean())


def colour_error(out: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean absolute difference of the chroma (channels minus luma) in 8-bit levels."""
    chroma = lambda x: x.float() - luma(x.float())  # noqa: E731
    return float((chroma(out) - chroma(truth)).abs().mean() * 127.5)


def heldout_images(run: RunDir, num: int) -> tuple[ImageData, ImageData, ImageData]:
    """(training set, FID reference, held-out images to complete) for the run's data."""
    cfg = run.load_config()
    if cfg.data.source.startswith("emoji"):  # the vendors' test split; the training split is the reference
        train = load_dataset(cfg.data)
        test = load_dataset(replace(cfg.data, split="test"))
        # evenly spaced over the split (it is ordered by category: its first images are all flags)
        index = torch.linspace(0, len(test) - 1, min(num, len(test))).round().long()
        return train, train, test.subset(index)
    s = load_splits(cfg, 1, num)  # MNIST's splits; other data: a fixed split (the run may have trained on it)
    return s.train, s.reference, s.heldout


def ensure_palette(run: RunDir, task: str, data: ImageData) -> None:
    meta = run.stage_meta("palette")
    if meta is not None and meta.get("task") == task:
        return
    if meta is not None:
        raise VcdmError(
            f"{run.stage('palette')} holds a Palette model for {meta.get('task')!r}, not {task!r}"
        )
    cfg = run.load_config()
    cfg = replace(cfg, palette=replace(cfg.palette, task=task, net=cfg.decoder.net, train=cfg.decoder.train))
    print(f"training Palette ({task}) with the decoder's U-Net and budget ({cfg.decoder.train.total_nimg} images)",
          flush=True)  # fmt: skip
    train_stage("palette", run.path, cfg, data, progress=True)


def bench(args: argparse.Namespace) -> tuple[list[Row], dict]:
    run = RunDir(args.run)
    cfg = run.load_config()
    train, reference, held = heldout_images(run, args.num)
    n, size = len(held), held.images.shape[-1]
    images = held.as_float()
    colorizing = args.task == "colorize"
    # colourisation generates every pixel: its "mask" is all ones (PSNR over the whole image)
    masks = (
        torch.ones(n, 1, size, size)
        if colorizing
        else fixed_masks(args.task, range(n), size, seed=args.mask_seed)
    )
    seeds = list(range(n))
    extractor, _ = get_classifier(train, cfg.eval)
    ref = build_reference(extractor, reference, train, held)
    ev = Evaluation(held, images, masks, extractor, ref, cfg.eval.k, colorizing, args.show)

    if colorizing:
        ev.add("grayscale input (no colour)", 0, luma(images).expand_as(images), 0.0)
    else:
        for kind in ("mean", "blur"):
            t0 = time.perf_counter()
            out = fill(images, masks, kind)
            ev.add(f"fill {kind}", 0, out, time.perf_counter() - t0)

    ensure_palette(run, args.task, train)
    palette = load_palette(run.path)
    nfe = 2 * args.palette_steps - 1 if args.palette_sampler == "heun" else args.palette_steps
    for w in args.guidance:
        t0 = time.perf_counter()
        out = torch.cat([palette_sample(palette, images[i : i + args.batch], seeds[i : i + args.batch],
                                        masks=None if colorizing else masks[i : i + args.batch],
                                        sampler=args.palette_sampler, num_steps=args.palette_steps, guidance=w)
                         for i in range(0, n, args.batch)])  # fmt: skip
        ev.add(f"palette (guidance {w:g})", nfe * (1 if w == 1 else 2), out, time.perf_counter() - t0)
    if colorizing:
        return finish(args, ev)

    pipes = {"baseline": Pipeline.from_run(run.path, "baseline"),
             "decoder": Pipeline.from_run(run.path, "decoder", embedder=True)}  # fmt: skip
    for spec in args.repaint:
        steps, resamplings = (int(v) for v in spec.split(":"))
        nfe = walk_steps(repaint_walk(steps, args.jump, resamplings))
        arms = [
            ("baseline", None),
            ("decoder", "prior"),
            ("decoder", "masked"),
            ("decoder", "filled"),
            ("decoder", "image"),
        ]
        single = None  # the single-stage completions: their embedding is one more way to choose y
        for model, y in arms + [("decoder", "completed")]:
            t0, cost = time.perf_counter(), nfe
            if y == "completed":  # y = E(the single-stage model's completion): two RePaint passes
                y, cost = {"emb": embed(pipes["decoder"], single)}, 2 * nfe
            batches = range(0, n, args.batch)
            out = torch.cat([repaint_sample(pipes[model], images[i : i + args.batch], masks[i : i + args.batch],
                                            seeds[i : i + args.batch], sampler=args.repaint_sampler,
                                            num_steps=steps, jump_length=args.jump, resamplings=resamplings,
                                            cond={"emb": y["emb"][i : i + args.batch]} if isinstance(y, dict) else y)
                             for i in batches])  # fmt: skip
            single = out if model == "baseline" else single
            label = {"image": "oracle"}.get(y, y) if isinstance(y, str) else "E(single-stage completion)"
            name = f"repaint {model}" + (f" y={label}" if y else "")
            ev.add(f"{name} ({steps} steps, r={resamplings})", cost, out, time.perf_counter() - t0)
    return finish(args, ev)


def finish(args: argparse.Namespace, ev: Evaluation) -> tuple[list[Row], dict]:
    """Add the floor row, write the figure; (rows, info for the report)."""
    images, held, labels, colorizing = ev.images, ev.held, ev.held.labels, ev.colorizing
    n, size = len(images), images.shape[-1]
    floor = score(images, ev.extractor, ev.ref, k=ev.k)
    ev.rows.append(Row("held-out originals (floor)", 0, None, floor["fid"], None if labels is None else float(
        (ev.extractor.predict(images).cpu() == labels).float().mean()), 0.0))  # fmt: skip
    out_dir = Path(args.report).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = out_dir / f"{args.task}_{held.source.replace(':', '_')}.png"
    inputs = luma(images).expand_as(images) if colorizing else images * (1 - ev.masks)
    shown = ev.shown[int(colorizing) :]  # the grayscale input row is the inputs' row
    grid = torch.cat([images[: args.show], inputs[: args.show]] + [x for _, x in shown])
    save_grid(grid, figure, nrow=args.show)
    names = ["originals", "grayscale inputs" if colorizing else "masked inputs"]
    info = {"n": n, "size": size, "source": held.source, "figure": figure.name, "extractor": ev.extractor.name,
            "rows_in_figure": names + [m for m, _ in shown]}  # fmt: skip
    return ev.rows, info


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[Row]) -> str:
    colour = any(r.colour_error is not None for r in rows)
    head = (
        "| method | NFE | PSNR (dB) | FID | consistency | "
        + ("colour error | " if colour else "")
        + "seconds |"
    )
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for r in rows:
        extra = f"{fmt(r.colour_error, '.2f')} | " if colour else ""
        lines.append(f"| {r.method} | {r.nfe} | {fmt(r.psnr, '.2f')} | {r.fid:.2f} | {fmt(r.consistency, '.3f')} | "
                     f"{extra}{r.seconds:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a trained two-stage run (vcdm demo)")
    ap.add_argument("--task", choices=("inpaint", "uncrop", "colorize"), default="inpaint")
    ap.add_argument("--num", type=int, default=500, help="held-out images (default: 500)")
    ap.add_argument("--mask-seed", type=int, default=0)
    ap.add_argument("--palette-sampler", default="heun")
    ap.add_argument("--palette-steps", type=int, default=18)
    ap.add_argument("--repaint-sampler", default="ddpm")
    ap.add_argument("--repaint", nargs="+", default=["50:1", "25:4"], metavar="STEPS:RESAMPLINGS")
    ap.add_argument("--jump", type=int, default=5, help="RePaint's jump length (default: 5)")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0], help="Palette's weights (default: 1)")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--show", type=int, default=10, help="images per row of the figure")
    ap.add_argument("--report", default="docs/inpainting/report.md")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows, info = bench(args)
    text = table(rows)
    print(text)
    command = "python bench/inpainting.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    body = (f"# Inpainting benchmark ({args.task}, {info['source']}, {info['n']} held-out images at "
            f"{info['size']}x{info['size']})\n\n`{command}` ({time.perf_counter() - t0:.0f} s)\n\n{text}\n\n"
            f"FID on the evaluation classifier `{info['extractor']}` features against the run's reference set; "
            f"figure `{info['figure']}`, rows: {', '.join(info['rows_in_figure'])}.\n")  # fmt: skip
    atomic_write_text(Path(args.report), body)
    print(f"wrote {args.report}")


if __name__ == "__main__":
    sys.exit(exit_status(main))
