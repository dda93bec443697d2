"""`vcdm demo`: train every stage on the embedded MNIST (or a preset's data), sample both models, write a report.

A text-conditioned run (the emoji-text preset: a CLIP, a text prior, a text decoder) samples a row of 8 seeds for
each caption of `demo.prompts` instead of one seed per image."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from vcdm.config import RunConfig, preset
from vcdm.data import load_dataset, load_mnist, save_grid
from vcdm.embedders import knn_accuracy
from vcdm.errors import VcdmError
from vcdm.fileio import atomic_write_text
from vcdm.pipeline import Pipeline
from vcdm.runs import RunDir, guard, num_params
from vcdm.stages import compute_embeddings, get_kind, load_embedder, resolve_for_data, train_stage
from vcdm.training import distributed as dist

# what each stage is, and the grid file of each sampled arm
STAGE_TITLES = {"embedder": "contrastive image encoder", "prior": "transformer prior over y",
                "decoder": "U-Net p(x | y)", "baseline": "U-Net p(x), single-stage",
                "upsampler": "SR3 upsampler p(x | x_lr)", "clip": "CLIP on (image, caption) pairs"}  # fmt: skip
ARMS = {"decoder": ("two-stage", "two_stage.png"), "baseline": ("single-stage", "single_stage.png")}


def run_demo(
    out_dir: str | Path = "runs/demo",
    cfg: RunConfig | None = None,
    *,
    force: bool = False,
    num_samples: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Train embedder, prior, two-stage decoder and single-stage baseline; sample grids; write report.md.

    An interrupted demo resumes where it stopped (each stage from its last checkpoint). A finished one is
    kept unless force=True. Returns the report's path.
    """
    run = RunDir(out_dir)
    out = run.path
    guard(out, run.report.exists(), force, f"a finished demo ({run.report})", "redo it")
    cfg = cfg or preset("mnist")
    t_start = time.perf_counter()
    log = dist.print0
    data = load_dataset(cfg.data)
    run.save_config(resolve_for_data(cfg, data, run))
    log(f"data: {data.source}, {len(data)} images {tuple(data.images.shape[1:])}, {data.num_classes} classes")

    for name in cfg.demo.stages:
        if name == "prior" and not run.embeddings.is_file():
            compute_embeddings(out, cfg, data, progress=progress)
        kind = get_kind(name)
        if run.stage_done(kind.folder, kind.train_config(cfg).total_nimg):
            log(f"[{name}] already trained, reusing {run.stage(kind.folder)}")
        else:
            train_stage(name, out, cfg, data, progress=progress)

    # One sample set per model: the grid shows its first `num_samples`, the metrics use all of it.
    n_eval = max(num_samples, cfg.eval.num_samples) if cfg.data.source == "mnist" else num_samples
    seeds = list(range(seed, seed + n_eval))
    sampling, samples = {}, {}
    for name in (arm for arm in ARMS if arm in cfg.demo.stages):
        file = ARMS[name][1]
        pipe = Pipeline.from_run(out, name)  # a cascade when the run has an upsampler
        prompts = None
        if pipe.text_conditional:  # a row of 8 seeds per caption
            if not cfg.demo.prompts:
                raise VcdmError("this run is conditioned on text: set demo.prompts (the captions to draw)")
            prompts = [t for t in cfg.demo.prompts for _ in range(8)]
            seeds = [seed + i % 8 for i in range(len(prompts))]
            n_eval = num_samples = len(seeds)
        t0 = time.perf_counter()
        res = pipe(seeds, cfg.sample, progress=progress, prompts=prompts)
        samples[name] = res.images
        sampling[name] = time.perf_counter() - t0
        save_grid(samples[name][:num_samples], out / file, nrow=8)
        if res.low_res is not None:  # the base stage's images, before the upsampler
            save_grid(res.low_res[:num_samples], out / file.replace(".png", "_low_res.png"), nrow=8)
        log(f"wrote {out / file} ({n_eval} samples in {sampling[name]:.1f} s)")

    measured = cfg.data.source == "mnist" and "baseline" in samples
    quality = score_arms(cfg, data, samples, progress) if measured else None
    knn = embedder_knn(out, cfg)
    report = _report(out, cfg, data, sampling, knn, n_eval, quality, time.perf_counter() - t_start)
    atomic_write_text(run.report, report)
    log(f"wrote {run.report}")
    return run.report


def score_arms(cfg: RunConfig, data, samples: dict, progress: bool) -> dict:
    """FID / precision / recall / class histogram / near copies of each sample set on classifier features."""
    from vcdm.eval.scoring import build_reference, classifier_accuracy, get_classifier, score

    t0 = time.perf_counter()
    extractor, path = get_classifier(data, cfg.eval, progress=progress)
    n = len(next(iter(samples.values())))
    reference = load_mnist(cfg.eval.reference_split)
    heldout = load_mnist(cfg.eval.heldout_split, limit=n)
    ref = build_reference(extractor, reference, data, heldout)
    rows = {"real held-out (floor)": score(heldout.as_float(), extractor, ref, k=cfg.eval.k)}
    rows |= {name: score(images, extractor, ref, k=cfg.eval.k) for name, images in samples.items()}
    return {"rows": rows, "extractor": extractor.name, "path": str(path), "seconds": time.perf_counter() - t0,
            "accuracy": classifier_accuracy(extractor, reference), "reference": reference.source}  # fmt: skip


def _quality_lines(q: dict | None, n: int) -> list[str]:
    if q is None:
        return ["Quality: not measured (the demo's metrics use the embedded MNIST's splits).", ""]
    names = {"decoder": "two-stage", "baseline": "single-stage"}
    lines = [
        f"## Quality ({n:,} samples per model; compare only at equal sample counts)",
        "",
        f"Features: the penultimate layer of the evaluation classifier `{q['extractor']}` (accuracy "
        f"{q['accuracy']:.4f} on {q['reference']}), cached at `{q['path']}`. Reference set: {q['reference']}. "
        "Class TV: total-variation distance of the predicted-class histogram from uniform. Near copies: share of "
        "samples closer to a training image than 99% of held-out real images are.",
        "",
        "| set | FID | precision | recall | class TV | median NN distance to train | near copies |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in q["rows"].items():
        lines.append(f"| {names.get(name, name)} | {r['fid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['class_tv']:.3f} | {r['nn_median']:.3f} | {r['near_copy']:.3f} |")  # fmt: skip
    a, b = q["rows"]["baseline"]["fid"], q["rows"]["decoder"]["fid"]
    lines += ["", f"Two-stage vs single-stage FID: {b:.2f} vs {a:.2f} ({(b - a) / a * 100:+.0f}%).", ""]
    return lines


def embedder_knn(out: Path, cfg: RunConfig) -> float | None:
    """k-NN digit accuracy of the embeddings (labels used only for this check), or None if not applicable."""
    if cfg.data.source != "mnist" or cfg.embedder.kind == "precomputed":
        return None
    emb = load_embedder(out, cfg)
    train, test = load_mnist("train"), load_mnist("test")
    with torch.no_grad():
        e_train = emb.encode_images(train.images[:10000].float() / 127.5 - 1)
        e_test = emb.encode_images(test.images[:2000].float() / 127.5 - 1)
    return knn_accuracy(e_train, train.labels[:10000], e_test, test.labels[:2000], k=10)


def _aug_level(cfg: RunConfig) -> float:
    s = cfg.sample.upsampler_aug_sigma
    return cfg.upsampler.augment.sample_sigma if s is None else s


def _grid_table(cfg: RunConfig, sampling: dict) -> list[str]:
    cells = []
    for arm in sampling:
        title, file = ARMS[arm]
        if "upsampler" in cfg.demo.stages:
            low = file.replace(".png", "_low_res.png")
            cells += [(f"{title}, base (`{low}`)", f"![{title} base]({low})"),
                      (f"{title}, upsampled (`{file}`)", f"![{title}]({file})")]  # fmt: skip
        else:
            cells.append((f"{title} (`{file}`)", f"![{title}]({file})"))
    return ["| " + " | ".join(c[0] for c in cells) + " |", "|" + " --- |" * len(cells),
            "| " + " | ".join(c[1] for c in cells) + " |"]  # fmt: skip


def _report(
    out: Path,
    cfg: RunConfig,
    data,
    sampling: dict,
    knn: float | None,
    n: int,
    quality: dict | None,
    total: float,
) -> str:
    rows = []
    for name in cfg.demo.stages:
        what, m = STAGE_TITLES[name], RunDir(out).stage_meta(name)
        rows.append(f"| {name} | {what} | {num_params(out / name):,} | {m['nimg']:,} | {m['seconds']:.0f} | "
                    f"{m['nimg'] / max(m['seconds'], 1e-9):.0f} |")  # fmt: skip
    s = cfg.sample
    lines = [
        "# vcdm demo report",
        "",
        f"Data: {data.source}, {len(data):,} images of shape {tuple(data.images.shape[1:])}. "
        f"Total wall time of this demo run: {total / 60:.1f} min (training resumed from checkpoints counts "
        "only the time of this invocation; per-stage seconds below are the full training time).",
        "",
        "| stage | what | parameters | images seen | seconds | images/s |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Sampling: {n:,} images each, decoder {s.sampler} with {s.num_steps} steps, prior {s.prior_sampler} with "
        f"{s.prior_num_steps} steps, guidance {s.guidance} / prior guidance {s.prior_guidance}, "
        f"{s.precision}"
        + (
            f"; upsampler {s.upsampler_sampler} with {s.upsampler_num_steps} steps, augmentation level "
            f"{_aug_level(cfg)}"
            if "upsampler" in cfg.demo.stages
            else ""
        )  # fmt: skip
        + ". "
        + "; ".join(f"{ARMS[a][0].capitalize()}: {sec:.1f} s" for a, sec in sampling.items())
        + ".",
        "",
        *_grid_table(cfg, sampling),
        "",
    ]
    if knn is not None:
        lines += [f"Embedder check: 10-NN digit accuracy of the embeddings on 2,000 MNIST test images "
                  f"(10,000 training images as the reference; labels used only here): {knn:.3f}.", ""]  # fmt: skip
    lines += _quality_lines(quality, n)
    lines += [
        "The resolved config of this run is `config.json` beside this report.",
    ]
    return "\n".join(lines) + "\n"
