"""Classifier guidance on an unconditional MNIST model: accuracy toward the requested class vs diversity.

Run as `.venv/bin/python bench/classifier_guidance.py [--run DIR] [--num 50] [--scales 0,1,2,4,8]
[--steps 12]`.
It trains (or reuses, if DIR already holds them) a single-stage unconditional U-Net (the run's "baseline"
stage) and a noise-aware classifier p(a | x, sigma) (DIR/noisy_classifier), then, for every scale s, samples
--num images for each requested class from the same seeds with classifier guidance
D_s = D + s sigma^2 grad_x log p(a | x, sigma) (Dhariwal & Nichol 2021), and prints a markdown table:

- accuracy: share of samples that the separate, clean evaluation classifier (vcdm.eval.scoring.get_classifier,
  trained once on the training set and cached) assigns to the requested class;
- feature distance within requested class: mean pairwise Euclidean distance between the evaluation
  classifier's features of the samples requested for one class, averaged over classes; it also falls when
  guidance stops mixing classes, so read it with
- feature distance within predicted class: the same over the samples the evaluation classifier puts in one
  class, whatever was requested: the diversity of, say, the 7s (lower = less diverse);
- recall (Kynkaanniemi et al. 2019, k = 3) and FID against the MNIST test split, all rows at equal N.

A row of real held-out images (the validation split, N per class) gives the scale of each figure. The table is
also written to DIR/classifier_guidance.md with one sample grid per scale (a row per class). The default CPU
configuration takes about 15 minutes on 2 shared cores (training ~9 of them, sampling ~5; the evaluation
classifier, on its first use, ~2 more).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see bench/unet_speed.py

import torch  # noqa: E402

from vcdm.config import RunConfig, load_config, preset  # noqa: E402
from vcdm.data import ImageData, load_dataset, load_mnist, save_grid  # noqa: E402
from vcdm.errors import VcdmError  # noqa: E402
from vcdm.eval.fid import fid_from_features  # noqa: E402
from vcdm.eval.prdc import precision_recall  # noqa: E402
from vcdm.eval.scoring import get_classifier  # noqa: E402
from vcdm.fileio import atomic_write_text  # noqa: E402
from vcdm.guidance import classifier_guidance  # noqa: E402
from vcdm.pipeline import Pipeline, sample_stage  # noqa: E402
from vcdm.runs import save_config, stage_done  # noqa: E402
from vcdm.stages import load_noisy_classifier, train_stage  # noqa: E402
from vcdm.stages.classifier import NOISY_DIR  # noqa: E402

DEFAULT_BASELINE_NIMG = 24_000


def bench_config(baseline_nimg: int, cfg: RunConfig | None = None) -> RunConfig:
    """The mnist preset's (or `cfg`'s) single-stage U-Net on a short budget; the noisy classifier uses
    cfg.eval's."""
    cfg = cfg or preset("mnist")
    train = replace(cfg.baseline.train, total_nimg=baseline_nimg, checkpoint_every_nimg=baseline_nimg)
    return replace(cfg, baseline=replace(cfg.baseline, train=train))


def prepare_run(run: Path, baseline_nimg: int | None, progress: bool) -> tuple[RunConfig, ImageData]:
    """Train the baseline and the noisy classifier into `run`, or reuse finished ones.

    baseline_nimg: the baseline's budget (None: 24,000 for a new run, the saved one for an existing run); a
    larger budget than an existing run's continues its training from the last checkpoint.
    """
    if (run / "config.json").is_file():
        cfg = load_config(run / "config.json")
        if baseline_nimg is not None:
            cfg = bench_config(baseline_nimg, cfg)
    else:
        cfg = bench_config(baseline_nimg or DEFAULT_BASELINE_NIMG)
    save_config(run, cfg)
    if cfg.baseline.diffusion != cfg.decoder.diffusion:
        raise VcdmError(
            "baseline.diffusion must equal decoder.diffusion (the noisy classifier's noise levels)"
        )
    data = load_dataset(cfg.data)
    if not stage_done(run / "baseline", cfg.baseline.train.total_nimg):
        res = train_stage("baseline", run, cfg, data, progress=progress)
        print(f"baseline: {res.nimg} images in {res.seconds:.0f} s")
    if not stage_done(run / NOISY_DIR, cfg.eval.classifier_train.total_nimg):
        res = train_stage("noisy-classifier", run, cfg, data, progress=progress)
        print(f"noisy classifier: {res.nimg} images in {res.seconds:.0f} s")
    return cfg, data


def within_class_distance(features: torch.Tensor, classes: torch.Tensor) -> float:
    """Mean pairwise feature distance among samples of the same (requested) class, averaged over classes."""
    per_class = []
    for c in classes.unique():
        f = features[classes == c].double()
        n = len(f)
        if n > 1:
            per_class.append(float(torch.cdist(f, f).sum() / (n * (n - 1))))
    return sum(per_class) / len(per_class)


def evaluate(images, requested, extractor, ref_features) -> dict[str, float]:
    feats, predicted = extractor.features(images), extractor.predict(images)
    _, recall = precision_recall(ref_features, feats, k=3)
    return {
        "accuracy": float((predicted == requested).float().mean()),
        "distance": within_class_distance(feats, requested),
        "distance_predicted": within_class_distance(feats, predicted),
        "recall": recall,
        "fid": fid_from_features(feats, ref_features),
    }


def heldout_per_class(num: int, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """`num` validation images of each class: (images float32 [-1, 1], labels)."""
    valid = load_mnist("valid")
    idx = torch.cat([(valid.labels == c).nonzero().flatten()[:num] for c in classes])
    return valid.as_float(idx), valid.labels[idx]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/classifier_guidance", help="run directory (default: %(default)s)")
    ap.add_argument("--num", type=int, default=50, help="samples per class and scale (default: %(default)s)")
    ap.add_argument(
        "--scales", default="0,1,2,4,8", help="comma-separated guidance scales (default: %(default)s)"
    )
    ap.add_argument("--steps", type=int, default=12, help="Heun steps (default: %(default)s)")
    ap.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="requested classes (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="first seed; every scale uses the same seeds")
    budget = f"{DEFAULT_BASELINE_NIMG:,} for a new run; above a run's budget, its training continues"
    ap.add_argument("--baseline-nimg", type=int, help=f"the baseline's training images (default: {budget})")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        scales = [float(s) for s in args.scales.split(",")]
        classes = [int(c) for c in args.classes.split(",")]
    except ValueError:
        print("error: --scales and --classes take comma-separated numbers", file=sys.stderr)
        return 2
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    run, progress = Path(args.run), not args.no_progress
    t0 = time.perf_counter()
    cfg, data = prepare_run(run, args.baseline_nimg, progress)
    extractor, _ = get_classifier(data, cfg.eval, progress=progress)
    ref_features = extractor.features(load_mnist(cfg.eval.reference_split).as_float())
    print(f"training and evaluation classifier ready in {time.perf_counter() - t0:.0f} s")

    pipe = Pipeline.from_run(run, "baseline")
    classifier, sigma_data = load_noisy_classifier(run)
    requested = torch.tensor(classes).repeat_interleave(args.num)
    rows, n_grid = {}, min(args.num, 10)
    real, real_labels = heldout_per_class(args.num, classes)
    rows["real held-out"] = evaluate(real, real_labels, extractor, ref_features) | {"seconds": 0.0}
    for s in scales:
        t1 = time.perf_counter()
        images = []
        for i, c in enumerate(classes):
            seeds = list(range(args.seed + i * args.num, args.seed + (i + 1) * args.num))
            d = classifier_guidance(pipe.decoder, classifier, c, s, sigma_data=sigma_data)
            x = sample_stage(d, pipe.decoder_diffusion, pipe.image_shape, seeds, None, sampler="heun",
                             num_steps=args.steps)  # fmt: skip
            images.append(x.clamp(-1, 1))
        images = torch.cat(images)
        rows[f"s = {s:g}"] = evaluate(images, requested, extractor, ref_features)
        rows[f"s = {s:g}"]["seconds"] = time.perf_counter() - t1
        grid = images.reshape(len(classes), args.num, *images.shape[1:])[:, :n_grid].flatten(0, 1)
        save_grid(grid, run / f"guidance_s{s:g}.png", nrow=n_grid)
        r = rows[f"s = {s:g}"]
        print(f"s = {s:g}: accuracy {r['accuracy']:.3f}, FID {r['fid']:.2f} ({r['seconds']:.0f} s)")

    n = len(requested)
    lines = [
        f"Classifier guidance of the single-stage unconditional model ({trained_nimg(run / 'baseline')} "
        f"training images; noisy classifier {trained_nimg(run / NOISY_DIR)} images), Heun {args.steps} "
        f"steps, {args.num} samples per class x {len(classes)} classes = {n} per row, same seeds "
        f"for every scale. Features: evaluation classifier `{extractor.name}`; FID and recall against "
        f"MNIST {cfg.eval.reference_split} (10,000 images).",
        "",
        "| set | accuracy to requested class | feature distance within requested class | feature distance "
        "within predicted class | recall | FID | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        keys = ("accuracy", "distance", "distance_predicted", "recall")
        figures = [f"{r[k]:.3f}" for k in keys] + [f"{r['fid']:.2f}"]
        lines.append(f"| {name} | {' | '.join(figures)} | {r['seconds']:.0f} |")
    table = "\n".join(lines) + "\n"
    grids = " ".join(f"![s={s:g}](guidance_s{s:g}.png)" for s in scales)
    atomic_write_text(run / "classifier_guidance.md", table + "\n" + grids + "\n")
    print(table)
    print(f"total {time.perf_counter() - t0:.0f} s; grids and table in {run}")
    return 0


def trained_nimg(stage_dir: Path) -> str:
    """Images a stage was trained on, from its model.json, formatted with thousands separators."""
    return f"{json.loads((stage_dir / 'model.json').read_text())['nimg']:,}"


if __name__ == "__main__":
    sys.exit(main())
