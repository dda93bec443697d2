"""Running the quality benchmark: data splits, training every arm, sampling and scoring (see vcdm.quality)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vcdm.config import RunConfig, SampleConfig, load_config, to_dict
from vcdm.data import ImageData, load_dataset, load_mnist, save_grid
from vcdm.data.emoji import emoji_vendors
from vcdm.embedders import embed_images
from vcdm.errors import VcdmError
from vcdm.eval import diagnostics as dg
from vcdm.eval.classifier import ClassifierExtractor
from vcdm.eval.memorization import nearest_neighbour_distances
from vcdm.eval.scoring import (
    Reference,
    build_reference,
    classifier_accuracy,
    get_classifier,
    score_features,
)
from vcdm.fileio import atomic_write_text
from vcdm.pipeline import Pipeline
from vcdm.quality.arms import (
    CLASS,
    CLASS_TWO,
    FLOOR,
    ORACLE,
    SINGLE,
    TWO,
    Arm,
    arm_config,
    check_fair,
    quality_config,
    scale_budgets,
    select_arms,
    with_train_seed,
)
from vcdm.quality.report import write_report, write_summary
from vcdm.runs import RunDir, save_config, stage_done
from vcdm.stages import compute_embeddings, load_embedder, load_embeddings, train_stage
from vcdm.training import distributed as dist


@dataclass
class Splits:
    train: ImageData  # what every stage (and the evaluation classifier) trains on
    reference: ImageData  # the FID / precision-recall reference
    heldout: ImageData  # len(seeds) * n real images; set j is rows [j * n, (j + 1) * n)
    n: int  # images per sample set


def load_splits(cfg: RunConfig, num_sets: int, n: int, reference_size: int | None = None) -> Splits:
    """Training, reference and held-out images: the embedded MNIST's splits; for emoji, the training split
    (trained on, and the FID reference, as CIFAR-10's FID is taken against its training set) and the held-out
    test split (names never trained on: the floor, the oracle's embeddings, memorisation); else a fixed split
    of the data."""
    d = cfg.data
    if d.source == "mnist":
        opts = {"image_size": d.image_size, "channels": d.channels}
        train = load_dataset(d)
        reference = load_mnist(cfg.eval.reference_split, limit=reference_size, **opts)
        heldout = load_mnist(cfg.eval.heldout_split, limit=num_sets * n, **opts)
    elif emoji_vendors(d.source) is not None:
        train = load_dataset(d)
        heldout = load_dataset(replace(d, split="test"))
        pick = torch.Generator().manual_seed(0x5EED)  # even mixes of names, categories and vendors
        heldout = heldout.subset(torch.randperm(len(heldout), generator=pick))
        reference = train.subset(torch.randperm(len(train), generator=pick)[: reference_size or 10_000])
    else:
        data = load_dataset(d)
        perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0x5EED))
        n_ref = min(reference_size or 10_000, len(data) // 5)
        n_hold = min(num_sets * n, len(data) // 5)
        reference, heldout, train = (data.subset(perm[:n_ref]), data.subset(perm[n_ref : n_ref + n_hold]),
                                     data.subset(perm[n_ref + n_hold :]))  # fmt: skip
    if train.labels is None:
        raise VcdmError(f"{d.source}: the quality benchmark needs class labels (class subfolders or an npz "
                        "'labels' array) for the class-conditional arms and the evaluation classifier")  # fmt: skip
    n = min(n, len(heldout) // num_sets)
    if n <= cfg.eval.k + 1:
        raise VcdmError(f"{d.source}: too few images for {num_sets} held-out sets of more than "
                        f"{cfg.eval.k + 1} images (eval.k = {cfg.eval.k})")  # fmt: skip
    return Splits(train, reference, heldout.subset(slice(0, num_sets * n)), n)


def image_seeds(seed: int, n: int) -> list[int]:
    """Per-image seeds of sample set `seed`: seed * 10**6 + i (disjoint sets; label = image seed % K)."""
    return [seed * 1_000_000 + i for i in range(n)]


class _Results:
    """results.json: figures keyed by what was measured, saved after each, dropped when the params change."""

    def __init__(self, path: Path, params: dict[str, Any]):
        self.path, self.data = path, {"params": params}
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("params") == params:
                self.data = old

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def put(self, key: str, value: Any) -> Any:
        self.data[key] = value
        atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")
        return value


def run_quality_benchmark(
    out_dir: str | Path,
    cfg: RunConfig | None = None,
    *,
    scale: float = 1.0,
    seeds: Sequence[int] = (0, 1, 2),
    train_seeds: Sequence[int] | None = None,
    data_path: str | Path | None = None,
    num_samples: int | None = None,
    budget_fractions: Sequence[float] = (0.125, 0.25, 0.5, 1.0),
    reference_size: int | None = None,
    arms: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Train the four arms at equal image-model compute, sample and score them; write report.md.

    Args:
        out_dir: output directory (one run directory per arm, results.json, report.md, fid_vs_budget.png).
        cfg: base config (default `quality_config()`); the decoder section trains the two-stage arms, the
            baseline section the single-stage ones (same U-Net and budget required).
        scale: multiplies every training budget (e.g. 0.25 for a quick CPU check, 4+ on a GPU).
        seeds: sampling seed sets (>= 1; mean and spread are over them; >= 3 for a spread worth reading).
        train_seeds: training replicates. None (the default) trains every arm once, with cfg's own stage
            seeds, into out_dir; one seed does the same with every stage's train.seed set to it. Several
            train every arm once per seed into out_dir/train_seed_<s>/ (each with its own full report), and
            out_dir/report.md gives the mean and spread over them: at small budgets the training seed moves
            FID far more than the sampling seed does.
        data_path: an image folder or .npz with labels instead of cfg.data.source.
        num_samples: images per sample set (default cfg.eval.num_samples); all arms use the same count.
        budget_fractions: decoder (and prior) budgets, as fractions of the full one, at which arms (a)
            and (b) (and the prior) are scored along the way; the decoders train in increments (the loop
            resumes exactly).
        reference_size: use only the first N reference images (default: the whole split, at most 10k).
        arms: the arms to train and score, by key (default: all four); "single" and "two_stage" are required,
            "class" and "class_two_stage" optional (they double the training).
        force: delete an out_dir that holds a benchmark of a different config.
    Returns:
        The report's path.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    cfg = scale_budgets(cfg or quality_config(), scale)
    if data_path is not None:
        cfg = replace(cfg, data=replace(cfg.data, source=str(data_path)))
    check_fair(cfg)
    chosen = select_arms(arms)
    seeds = _seed_list(seeds, "seeds")
    train_seeds = None if train_seeds is None else _seed_list(train_seeds, "training seeds")
    fractions = sorted({float(f) for f in budget_fractions} | {1.0})
    if not 0 < fractions[0]:
        raise VcdmError(f"budget fractions must lie in (0, 1], got {list(budget_fractions)}")
    if train_seeds is not None and len(train_seeds) == 1:
        cfg = with_train_seed(cfg, train_seeds[0])
    if RunDir(out).config.is_file() and to_dict(load_config(RunDir(out).config)) != to_dict(cfg):
        if not force:
            raise VcdmError(f"{out} holds a quality benchmark of another config; pass --force to start over")
        shutil.rmtree(out)
    save_config(out, cfg)
    log = dist.print0

    splits = load_splits(cfg, len(seeds), num_samples or cfg.eval.num_samples, reference_size)
    train = splits.train
    log(f"data: {train.source}, {len(train)} training images, {len(splits.reference)} reference, "
        f"{len(splits.heldout)} held-out; {splits.n} samples x {len(seeds)} seeds per arm"
        + (f"; training seeds {train_seeds}" if train_seeds and len(train_seeds) > 1 else ""))  # fmt: skip
    ev = prepare_evaluation(splits, cfg, progress=progress)
    if train_seeds is None or len(train_seeds) == 1:
        _run_replicate(out, cfg, ev, seeds, fractions, chosen, progress)
        return out / "report.md"
    replicates = {}
    for ts in train_seeds:
        log(f"---- training seed {ts} ----")
        sub = out / f"train_seed_{ts}"
        cfg_ts = with_train_seed(cfg, ts)
        if RunDir(sub).config.is_file() and to_dict(load_config(RunDir(sub).config)) != to_dict(cfg_ts):
            raise VcdmError(f"{sub} holds a replicate of another config; pass --force to start over")
        save_config(sub, cfg_ts)
        replicates[ts] = _run_replicate(sub, cfg_ts, ev, seeds, fractions, chosen, progress)
    info = {**ev.info, "seconds": time.perf_counter() - t_start}
    return write_summary(out, cfg, replicates, info)


def _seed_list(seeds: Sequence[int], what: str) -> list[int]:
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out) or min(out) < 0:
        raise VcdmError(f"{what} must be distinct non-negative integers (at least one), got {out}")
    return out


@dataclass
class Evaluation:
    """What every replicate is scored with: the data splits, the evaluation classifier, the reference."""

    splits: Splits
    extractor: ClassifierExtractor
    ref: Reference
    info: dict[str, Any]  # the classifier's name, cache path and accuracy, and the reference's source


def prepare_evaluation(splits: Splits, cfg: RunConfig, *, progress: bool = True) -> Evaluation:
    """The evaluation classifier for the splits' training set (trained once, cached) and the reference's
    features, shared by every replicate of a benchmark and by anything that rescores its arms."""
    extractor, clf_path = get_classifier(splits.train, cfg.eval, progress=progress)
    ref = build_reference(extractor, splits.reference, splits.train, splits.heldout)
    info = {"classifier": extractor.name, "classifier_path": str(clf_path), "reference": splits.reference.source,
            "accuracy": classifier_accuracy(extractor, splits.reference)}  # fmt: skip
    return Evaluation(splits, extractor, ref, info)


def _run_replicate(out: Path, cfg: RunConfig, ev: Evaluation, seeds: list[int], fractions: list[float],
                   arms: tuple[Arm, ...], progress: bool) -> dict[str, Any]:  # fmt: skip
    """Train, sample and score the arms of one training replicate in `out`; returns its results."""
    t_start = time.perf_counter()
    splits, extractor, ref, log = ev.splits, ev.extractor, ev.ref, dist.print0
    n, train, k = splits.n, splits.train, cfg.eval.k
    params = {"seeds": seeds, "n": n, "fractions": fractions, "reference": len(splits.reference),
              "data": train.source, "train": len(train), "arms": [arm.key for arm in arms]}  # fmt: skip
    res = _Results(out / "results.json", params)

    def evaluate(key: str, images: torch.Tensor, memo: bool = False) -> dict[str, Any]:
        feats = extractor.features(images)
        row = score_features(feats, extractor.predict(images), ref, k=k)
        if memo:
            sample_nn = nearest_neighbour_distances(feats, ref.train_features)
            row["memorization"] = dg.memorization_summary(sample_nn, ref.heldout_nn)
        return res.put(key, row)

    def budgets(total: int, batch: int) -> list[int]:
        return sorted({max(1, round(total * f / batch)) * batch for f in fractions})

    # ---- (b)'s embedder, embeddings and prior (trained in increments, scored at each) ----
    runs = {arm.key: out / arm.key for arm in arms}
    cfgs = {arm.key: arm_config(cfg, arm) for arm in arms}
    for arm in arms:
        save_config(runs[arm.key], cfgs[arm.key])
    run_b, cfg_b = runs[TWO.key], cfgs[TWO.key]
    if cfg.embedder.kind == "learned" and not stage_done(run_b / "embedder", cfg.embedder.train.total_nimg):
        train_stage("embedder", run_b, cfg_b, train, progress=progress, save_config=False)
    # y = the image embeddings of a CLIP trained on the training split's captions (DALL-E 2's y)
    clip = cfg.embedder.kind == "clip-trained" and cfg.embedder.path is None
    if clip and not stage_done(run_b / "clip", cfg.clip.train.total_nimg):
        train_stage("clip", run_b, cfg_b, train, progress=progress, save_config=False)
    if not RunDir(run_b).embeddings.is_file():
        compute_embeddings(run_b, cfg_b, train, progress=progress)
    es = load_embeddings(run_b)
    embedder = load_embedder(run_b, cfg_b)
    # Real embeddings, normalised as the prior sees them: held-out images' (the oracle's input and the prior's
    # reference), or the training set's when the embeddings are precomputed (no held-out ones exist).
    if embedder is not None:
        real_emb = es.stats.normalize(embed_images(embedder, splits.heldout.images))
    else:
        real_emb = es.normalized()[: len(splits.heldout)]
    train_emb = es.normalized()[len(train) - len(real_emb) : len(train)]
    if res.get("prior_floor") is None:
        res.put("prior_floor", dg.embedding_frechet(train_emb, real_emb))
    prior_seeds = list(range(len(real_emb)))
    for budget in budgets(cfg.prior.train.total_nimg, cfg.prior.train.batch_size):
        key = f"prior_curve/{budget}"
        if res.get(key) is None:
            if not stage_done(run_b / "prior", budget):
                c = replace(
                    cfg_b, prior=replace(cfg_b.prior, train=replace(cfg_b.prior.train, total_nimg=budget))
                )
                train_stage("prior", run_b, c, train, progress=progress, save_config=False)
            emb = _sample_prior(run_b, prior_seeds, None, cfg.sample)
            res.put(key, dg.embedding_frechet(emb, real_emb))
            log(f"prior at {budget} images: Frechet distance to held-out embeddings {res.get(key):.4f}")

    # ---- (a) and (b) in increments, scored along the way on the first seed set ----
    dec_budgets = budgets(cfg.decoder.train.total_nimg, cfg.decoder.train.batch_size)
    for budget in dec_budgets:
        for arm in (SINGLE, TWO):
            _train_decoder_to(runs[arm.key], cfgs[arm.key], arm, train, budget, progress)
        for arm in (SINGLE, TWO):
            key = f"curve/{arm.key}/{budget}"
            if budget < dec_budgets[-1] and res.get(key) is None:
                images = sample_arm(runs[arm.key], arm, seeds[0], n, cfg.sample, train.num_classes)[0]
                log(f"{arm.title} at {budget} images: FID {evaluate(key, images)['fid']:.3f}")

    # ---- (c), and (d) with its class-conditional prior, when chosen ----
    full = cfg.decoder.train.total_nimg
    if CLASS in arms:
        _train_decoder_to(runs[CLASS.key], cfgs[CLASS.key], CLASS, train, full, progress)
    if CLASS_TWO in arms:
        run_d = runs[CLASS_TWO.key]
        if not RunDir(run_d).embeddings.is_file():
            shutil.copyfile(RunDir(run_b).embeddings, RunDir(run_d).embeddings)
        if not stage_done(run_d / "prior", cfg.prior.train.total_nimg):
            train_stage("prior", run_d, cfgs[CLASS_TWO.key], train, progress=progress, save_config=False)
        _train_decoder_to(run_d, cfgs[CLASS_TWO.key], CLASS_TWO, train, full, progress)

    # ---- final evaluation: every arm, the oracle and the floor, on every seed set ----
    for j, seed in enumerate(seeds):
        rows = slice(j * n, (j + 1) * n)
        if res.get(f"final/{FLOOR}/{seed}") is None:
            evaluate(f"final/{FLOOR}/{seed}", splits.heldout.as_float(rows), memo=j == 0)
        for arm in arms:
            key = f"final/{arm.key}/{seed}"
            if res.get(key) is not None:
                continue
            images, emb, timing = sample_arm(runs[arm.key], arm, seed, n, cfg.sample, train.num_classes,
                                              timed=j == 0)  # fmt: skip
            if j == 0:  # the first set's extras go in before its row, which marks the set as done
                save_grid(images[:64], out / f"samples_{arm.key}.png", nrow=8)
                res.put(f"timing/{arm.key}", timing)
                if emb is not None:
                    res.put(f"prior_final/{arm.key}", dg.embedding_frechet(emb, real_emb))
            row = evaluate(key, images, memo=j == 0)
            log(f"{arm.title}, seed {seed}: FID {row['fid']:.3f}")
        if embedder is not None and res.get(f"final/{ORACLE}/{seed}") is None:
            pipe = Pipeline.from_run(run_b, TWO.section, device=dist.device())
            images = _decode(pipe, image_seeds(seed, n), real_emb[rows], None, cfg.sample)
            row = evaluate(f"final/{ORACLE}/{seed}", images, memo=j == 0)
            log(f"oracle, seed {seed}: FID {row['fid']:.3f}")

    info = {**ev.info, "seconds": time.perf_counter() - t_start}
    write_report(out, cfg, res.data, runs, info)
    return res.data


def _train_decoder_to(
    run: Path, cfg: RunConfig, arm: Arm, data: ImageData, budget: int, progress: bool
) -> None:
    """Train an arm's decoder until `budget` images (resuming from its last checkpoint)."""
    section = arm.section
    if stage_done(run / section, budget):
        return
    st = getattr(cfg, section)
    c = replace(cfg, **{section: replace(st, train=replace(st.train, total_nimg=budget))})
    train_stage(section, run, c, data, progress=progress, save_config=False)


def _sample_prior(run: Path, seeds: list[int], labels: torch.Tensor | None, s: SampleConfig) -> torch.Tensor:
    """Normalised embeddings drawn from a run's exported prior alone (no decoder yet): (len(seeds), D)."""
    return Pipeline.from_run(run, None, device=dist.device()).sample(seeds, s, labels, until="prior")["prior"]


def _decode(pipe: Pipeline, seeds: list[int], emb: torch.Tensor, labels: torch.Tensor | None,
            s: SampleConfig) -> torch.Tensor:  # fmt: skip
    """Decode given normalised embeddings (the oracle arm)."""
    return pipe(seeds, s, labels, given={"prior": emb}).images


def sample_arm(run: Path, arm: Arm, seed: int, n: int, s: SampleConfig, num_classes: int, *,
                timed: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, float]]:  # fmt: skip
    """Sample set `seed` of an arm: (images, normalised prior embeddings or None, timing).

    Class-conditional arms get label = image seed % K, uniform over the classes.
    """
    pipe = Pipeline.from_run(run, arm.section, device=dist.device())
    seeds = image_seeds(seed, n)
    labels = torch.tensor([x % num_classes for x in seeds]) if arm.labelled or arm.class_prior else None
    t0 = time.perf_counter()
    o = pipe(seeds, s, labels=labels)
    seconds = time.perf_counter() - t0
    emb = pipe.stats.normalize(o.embeddings) if o.embeddings is not None else None
    timing = {"seconds": seconds, "images_per_second": n / seconds}
    if timed and arm.two_stage:
        # the prior's part of that time: draw the same embeddings again, alone
        t0 = time.perf_counter()
        pipe.sample(seeds, s, labels, until="prior")  # (copied to the CPU: waits for the device)
        timing["prior_seconds"] = time.perf_counter() - t0
        timing["prior_share"] = dg.time_share(timing["prior_seconds"], seconds)
    return o.images, emb, timing
