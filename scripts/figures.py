"""Editing figures of a trained two-stage run, each the grid.png of one `vcdm edit` command.

    python scripts/figures.py --run runs/demo --out docs/figures
    python scripts/figures.py --run runs/figures --out docs/figures --train   # train a small run first

Writes OUT/inputs/*.png (held-out images used as inputs, and mask.png, white = to fill), one PNG per figure
(reconstruction, variations, interpolation, embedding edit, SDEdit, ILVR, inpainting and uncropping with RePaint,
and with Palette when the run has a Palette model), and OUT/figures.md listing each picture with the exact command
that produced it and a table of inversion PSNR against the number of steps. About 2-3 minutes on 2 CPU
cores for the demo model.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see vcdm.cli.main

import torch  # noqa: E402

from vcdm.errors import VcdmError  # noqa: E402

PSNR_STEPS = (10, 25, 50, 100)
PSNR_FIXED_POINT = (0, 1, 3)
SIGMA_0 = ("0.2", "0.5", "1", "2", "5", "10", "80")
ILVR_FACTORS = ("1", "2", "4", "7", "14")
STRENGTHS = ("-1", "0", "0.5", "1", "1.5", "2")
REPAINT = (
    "--method",
    "repaint",
    "--sampler",
    "ddpm",
    "--steps",
    "50",
    "--resamplings",
    "2",
    "--jump-length",
    "5",
)


def train_run(run: Path, preset: str, budget: float) -> None:
    """Train the embedder, embeddings, prior and decoder that `run` lacks.

    A new run takes `preset` with every stage's image budget scaled by `budget`; an existing run keeps its
    config.json (an interrupted --train resumes where it stopped).
    """
    from vcdm.config import load_config
    from vcdm.config import preset as get_preset
    from vcdm.data import load_dataset
    from vcdm.runs import save_config, stage_done
    from vcdm.stages import compute_embeddings, train_stage

    def scaled(stage):
        total = max(stage.train.batch_size, int(stage.train.total_nimg * budget))
        warmup = min(stage.train.warmup_nimg, total // 4)
        return replace(stage, train=replace(stage.train, total_nimg=total, warmup_nimg=warmup))

    if (run / "config.json").is_file():
        cfg = load_config(run / "config.json")
    else:
        cfg = get_preset(preset)
        cfg = replace(
            cfg, embedder=scaled(cfg.embedder), prior=scaled(cfg.prior), decoder=scaled(cfg.decoder)
        )
        save_config(run, cfg)
    data = load_dataset(cfg.data)
    new_embedder = not stage_done(run / "embedder", cfg.embedder.train.total_nimg)
    if new_embedder:
        train_stage("embedder", run, cfg, data)
    if new_embedder or not (run / "embeddings.safetensors").is_file():  # embeddings of this embedder
        compute_embeddings(run, cfg, data)
    if not stage_done(run / "prior", cfg.prior.train.total_nimg):
        train_stage("prior", run, cfg, data)
    if not stage_done(run / "decoder", cfg.decoder.train.total_nimg):
        train_stage("decoder", run, cfg, data)


def write_inputs(run: Path, out: Path) -> dict[int, str]:
    """Save the first held-out image of each class (or the first 10 images) as OUT/inputs/*.png."""
    from vcdm.config import load_config
    from vcdm.data import load_dataset, save_images

    data_cfg = load_config(run / "config.json").data
    if data_cfg.source == "mnist":
        data_cfg = replace(data_cfg, split="valid", limit=1000)
    data = load_dataset(data_cfg)
    if data.labels is not None:
        index = [
            int(torch.nonzero(data.labels == c)[0])
            for c in range(data.num_classes)
            if (data.labels == c).any()
        ]
        keys = [int(data.labels[i]) for i in index]
    else:
        index = keys = list(range(min(10, len(data))))
    paths = save_images(data.as_float(torch.tensor(index)), out / "inputs", [f"input{k}.png" for k in keys])
    return {k: str(p) for k, p in zip(keys, paths)}


def write_mask(run: Path, out: Path) -> str:
    """The first evaluation inpainting mask at the run's image size as OUT/inputs/mask.png (white = to fill)."""
    from vcdm.config import load_config
    from vcdm.data import load_dataset, save_png
    from vcdm.data.masks import fixed_masks

    data_cfg = replace(load_config(run / "config.json").data, limit=1)
    size = load_dataset(data_cfg).images.shape[-1]
    path = out / "inputs" / "mask.png"
    save_png((fixed_masks("inpaint", [0], size)[0] * 255).to(torch.uint8), path)
    return str(path)


def run_edit(argv: list[str]) -> None:
    """Run `vcdm edit ARGV` in this process (the same parser and handler as the vcdm command)."""
    from vcdm.cli.edit import add_parser, run

    parser = argparse.ArgumentParser(prog="vcdm")
    add_parser(parser.add_subparsers(dest="command"))
    run(parser.parse_args(["edit", *argv]))


def psnr_table(run: Path, inputs: dict[int, str]) -> list[str]:
    """Markdown rows: mean / min PSNR of inversion -> decoding against steps, without and with refinement."""
    from vcdm.cli.common import read_images
    from vcdm.editing import invert, load_pipeline, psnr, reconstruct

    pipe = load_pipeline(run)
    images = read_images(list(inputs.values()), pipe.image_shape)
    head = " | ".join(f"fixed-point {k}" if k else "plain DDIM inversion" for k in PSNR_FIXED_POINT)
    rows = [f"| steps | {head} |", "| ---: |" + " ---: |" * len(PSNR_FIXED_POINT)]
    for steps in PSNR_STEPS:
        cells = []
        for k in PSNR_FIXED_POINT:
            y, x_T = invert(pipe, images, num_steps=steps, fixed_point_iters=k)
            p = psnr(reconstruct(pipe, y, x_T, num_steps=steps), images)
            cells.append(f"{p.mean():.1f} (min {p.min():.1f})")
        rows.append(f"| {steps} | " + " | ".join(cells) + " |")
    return rows


def make_figures(
    run: Path, out: Path, work: Path, inputs: dict[int, str], steps: int, mask: str
) -> list[dict]:
    """Run one `vcdm edit` command per figure and copy its grid.png to OUT/NAME.png."""
    keys = list(inputs)
    a, b, c = keys[3 % len(keys)], keys[8 % len(keys)], keys[4 % len(keys)]
    c_to = (c + 5) % 10 if len(keys) == 10 else keys[(keys.index(c) + 1) % len(keys)]
    latent = str(work / "reconstruction" / "latent.safetensors")
    r, s = str(run), ["--steps", str(steps), "--seed", "0"]
    specs = [
        ("reconstruction", "Inputs (top) and their reconstructions from (y, x_T) (bottom).",
         ["invert", r, *inputs.values(), "--steps", str(steps)]),
        ("variations", f"Variations of input {a}: its y decoded with 8 new x_T.",
         ["variations", r, "--latent", latent, "--index", str(keys.index(a)), "--num", "8", *s]),
        ("interpolation", f"Interpolation from input {a} to input {b} (slerp of y and of x_T).",
         ["interpolate", r, inputs[a], inputs[b], "--frames", "8", "--steps", str(steps)]),
        ("embedding_edit", f"Input {c} moved along the class-mean direction {c} -> {c_to}, strengths "
         f"{' '.join(STRENGTHS)} (0 is the reconstruction).",
         ["embed-edit", r, "--latent", latent, "--index", str(keys.index(c)), "--classes", str(c), str(c_to),
          "--strengths", *STRENGTHS, "--steps", str(steps)]),
        ("sdedit", f"SDEdit of input {b}: columns sigma_0 = {' '.join(SIGMA_0)}; rows: two seeds, y from "
         "the prior.", ["sdedit", r, inputs[b], "--sigma0", *SIGMA_0, "--num", "2", "--sampler", "euler", *s]),
        ("ilvr", f"ILVR toward input {a}: columns N = {' '.join(ILVR_FACTORS)}; rows: two seeds, y from the "
         "prior; corrections stop at sigma 0.3 (the last steps are the model's own).",
         ["ilvr", r, inputs[a], "--factor", *ILVR_FACTORS, "--sigma-stop", "0.3", "--num", "2", "--sampler", "euler", *s]),
        ("inpaint_repaint", f"RePaint with the single-stage model: input {c} with the hole of inputs/mask.png "
         "(first), then 6 seeds; DDPM, 50 steps, 2 passes over every 5 steps.",
         ["inpaint", r, inputs[c], "--mask", mask, *REPAINT, "--stage", "baseline", "--num", "6"]),
        ("inpaint_two_stage", f"RePaint with the two-stage model, y embedded from input {c} with its hole blur-filled: "
         "the same hole and seeds.",
         ["inpaint", r, inputs[c], "--mask", mask, *REPAINT, "--stage", "decoder", "--cond", "filled", "--num", "6"]),
        ("uncrop", f"Uncropping: the right 40% of input {b} filled by RePaint with the single-stage model.",
         ["uncrop", r, inputs[b], "--side", "right", "--width", "0.4", *REPAINT, "--stage", "baseline", "--num", "6"]),
    ]  # fmt: skip
    if (run / "palette" / "model.json").exists():
        specs.append(("inpaint_palette", f"The run's Palette model on input {c} and the same hole (18 Heun steps).",
                      ["inpaint", r, inputs[c], "--mask", mask, "--method", "palette", "--num", "6",
                       "--sampler", "heun", "--steps", "18"]))  # fmt: skip
    figures = []
    for name, caption, argv in specs:
        argv = [*argv, "--out", str(work / name), "--force"]
        entry = {"name": name, "caption": caption, "command": "vcdm edit " + shlex.join(argv)}
        t0 = time.perf_counter()
        try:
            run_edit(argv)
        except VcdmError as e:  # e.g. ILVR before the samplers have their `correct` hook: report, go on
            entry["skipped"] = str(e)
            print(f"{name}: skipped ({e})", file=sys.stderr)
        else:
            shutil.copyfile(work / name / "grid.png", out / f"{name}.png")
            print(f"{name}: {time.perf_counter() - t0:.1f} s")
        figures.append(entry)
    return figures


GUIDANCE_WEIGHTS = ("1", "3", "8")


def threshold_figure(run: Path, out: Path, work: Path, steps: int) -> dict:
    """Classifier-free guidance w = 1, 3, 8 on the two-stage decoder, without, static and dynamic thresholding:
    one row of 8 samples (the same seeds) per setting, stacked into OUT/thresholding.png."""
    from vcdm.cli import main as vcdm_main
    from vcdm.data import save_grid
    from vcdm.data.images import load_pngs

    rows, commands = [], []
    for threshold in ("none", "static", "dynamic"):
        for w in GUIDANCE_WEIGHTS:
            d = work / f"threshold-{threshold}-w{w}"
            argv = ["sample", str(run), "--num", "8", "--seed", "0", "--steps", str(steps), "--guidance", w,
                    "--threshold", threshold, "--out", str(d), "--force", "--no-progress"]  # fmt: skip
            if vcdm_main(argv) != 0:
                raise VcdmError(f"vcdm {shlex.join(argv)} failed")
            rows.append(load_pngs([d / f"{i:06d}.png" for i in range(8)]))
            commands.append("vcdm " + shlex.join(argv))
    save_grid(torch.cat(rows), out / "thresholding.png", nrow=8)
    caption = (
        f"Classifier-free guidance on the two-stage decoder, rows w = {', '.join(GUIDANCE_WEIGHTS)} without "
        f"thresholding, then the same with dynamic thresholding (percentile 0.995); same 8 seeds per row."
    )
    return {"name": "thresholding", "caption": caption, "command": "\n".join(commands)}


def write_markdown(out: Path, run: Path, figures: list[dict], table: list[str], n_inputs: int) -> None:
    """OUT/figures.md: every picture with its command, then the PSNR table."""
    from vcdm.fileio import atomic_write_text

    regen = shlex.join(["python", "scripts/figures.py", "--run", str(run), "--out", str(out)])
    lines = [
        "# Editing with the bipartite latent (y, x_T)",
        "",
        "Made by",
        "",
        "```",
        regen,
        "```",
        "",
        f"from the run `{run}`. Each picture is the `grid.png` of the command under it (`--out` keeps every",
        f"single image). The inputs are held-out images, saved in `{out}/inputs/`.",
        "",
    ]
    for f in figures:
        lines += [f"## {f['name'].replace('_', ' ').capitalize()}", "", f["caption"], ""]
        lines += [f"Not made: {f['skipped']}" if "skipped" in f else f"![{f['name']}]({f['name']}.png)", ""]
        lines += ["```", f["command"], "```", ""]
    if table:
        lines += [
            "## Inversion PSNR against the number of steps",
            "",
            "PSNR (dB, data range 2) of DDIM inversion followed by DDIM decoding on the same grid,",
            f"mean (min) over the {n_inputs} inputs; fixed-point k refines each inversion step k times",
            "(k more network calls per step).",
            "",
            *table,
            "",
        ]
    atomic_write_text(out / "figures.md", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo", help="trained run directory (default: runs/demo)")
    ap.add_argument("--out", default="docs/figures", help="PNGs and figures.md (default: docs/figures)")
    ap.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "vcdm-figures"),
        help="scratch directory for the commands' outputs (default: TMP/vcdm-figures)",
    )
    ap.add_argument("--train", action="store_true", help="first train the run's missing stages, small budget")
    ap.add_argument("--preset", default="mnist", help="config preset for --train (default: mnist)")
    ap.add_argument("--budget", type=float, default=0.25,
                    help="--train: fraction of the preset's images per stage (default: 0.25)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=50, help="sampling / inversion steps (default: 50)")
    ap.add_argument("--no-psnr", action="store_true", help="skip the PSNR-vs-steps table (the slowest part)")
    args = ap.parse_args(argv)
    run, out, work = Path(args.run), Path(args.out), Path(args.work)
    t0 = time.perf_counter()
    try:
        if args.train and not (run / "decoder" / "model.json").is_file():
            train_run(run, args.preset, args.budget)
        if not (run / "decoder" / "model.json").is_file():
            raise VcdmError(f"{run}: no trained decoder; run `vcdm demo --out {run}` or pass --train")
        inputs = write_inputs(run, out)
        figures = make_figures(run, out, work, inputs, args.steps, write_mask(run, out))
        figures.append(threshold_figure(run, out, work, args.steps))
        table = [] if args.no_psnr else psnr_table(run, inputs)
    except VcdmError as e:
        print(f"figures: error: {e}", file=sys.stderr)
        return 2
    write_markdown(out, run, figures, table, len(inputs))
    made = sum("skipped" not in f for f in figures)
    print(
        f"wrote {made} of {len(figures)} figures and figures.md to {out} in {time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
