"""The headline experiment: two-stage vs single-stage sampling at equal image-model compute.

Four arms use one U-Net size and one image budget (images seen by the image model):
    (a) single-stage unconditional     decoder condition "none"
    (b) two-stage                      embedder + prior + decoder condition "embedding"
    (c) class-conditional              decoder condition "label"
    (d) class-conditional two-stage    class-conditional prior + decoder condition "embedding+label"
Every arm is sampled with the same sampler and step count for several seed sets and scored on the
evaluation classifier's features, beside diagnostics that explain the number (vcdm.eval.diagnostics): the
metric's floor (real held-out images), an oracle arm (the two-stage decoder given real embeddings), the
prior's Frechet distance along its training, memorisation and time. Harvey & Wood (2023) report 25-50%
lower FID for two-stage sampling.

Layout of out_dir:
    config.json                               the benchmark's resolved (scaled) RunConfig
    single/ two_stage/ class/ class_two_stage/ one run directory per arm (vcdm.stages layout)
    results.json                              every figure measured; an interrupted benchmark resumes
    report.md, fid_vs_budget.png, samples_<arm>.png
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vcdm.config import (
    DecoderStage,
    DiffusionConfig,
    RunConfig,
    SampleConfig,
    from_dict,
    load_config,
    preset,
    to_dict,
)
from vcdm.data import ImageData, load_dataset, load_mnist, save_grid
from vcdm.embedders import embed_images
from vcdm.errors import VcdmError
from vcdm.eval import diagnostics as dg
from vcdm.eval.memorization import nearest_neighbour_distances
from vcdm.evaluate import build_reference, classifier_accuracy, get_classifier, score_features
from vcdm.fileio import atomic_write_text
from vcdm.pipeline import Pipeline, sample_stage
from vcdm.runs import save_config, stage_done
from vcdm.stages import (
    compute_embeddings,
    load_embedder,
    load_embeddings,
    load_model,
    train_decoder,
    train_embedder,
    train_prior,
)
from vcdm.training import distributed as dist


@dataclass(frozen=True)
class Arm:
    key: str  # its run directory under out_dir
    title: str
    section: str  # the RunConfig section ("decoder" | "baseline") whose U-Net and budget it trains with
    condition: str  # the decoder's condition
    class_prior: bool = False  # two-stage arms: whether the prior is class-conditional

    @property
    def two_stage(self) -> bool:
        return "embedding" in self.condition

    @property
    def labelled(self) -> bool:
        return "label" in self.condition


ARMS = (
    Arm("single", "(a) single-stage", "baseline", "none"),
    Arm("two_stage", "(b) two-stage", "decoder", "embedding"),
    Arm("class", "(c) class-conditional", "baseline", "label"),
    Arm("class_two_stage", "(d) class-cond. two-stage", "decoder", "embedding+label", class_prior=True),
)
SINGLE, TWO, CLASS, CLASS_TWO = ARMS
ORACLE, FLOOR = "oracle", "floor"
GOAL = -0.40  # the project's target: two-stage FID at least 40% below single-stage


def quality_config() -> RunConfig:
    """The CPU configuration (about an hour on 2 cores): the demo's nets and budgets (48k images per decoder).

    Sampling: Heun with 10 steps in bf16 for every arm (measured on 500 samples at 32k training images: FID
    within 1-2 points of 18 fp32 steps or 20 Euler steps, at about half the time).
    """
    cfg = preset("mnist")
    return replace(
        cfg, sample=replace(cfg.sample, sampler="heun", num_steps=10, prior_num_steps=18, precision="bf16")
    )


def scale_budgets(cfg: RunConfig, scale: float) -> RunConfig:
    """Multiply every stage's training budget (images seen) by `scale`, rounded to whole batches."""
    if not scale > 0:
        raise VcdmError(f"--scale must be positive, got {scale!r}")

    def s(train):
        return replace(
            train, total_nimg=max(1, round(train.total_nimg * scale / train.batch_size)) * train.batch_size
        )

    return replace(
        cfg,
        embedder=replace(cfg.embedder, train=s(cfg.embedder.train)),
        prior=replace(cfg.prior, train=s(cfg.prior.train)),
        decoder=replace(cfg.decoder, train=s(cfg.decoder.train)),
        baseline=replace(cfg.baseline, train=s(cfg.baseline.train)),
    )


def arm_config(cfg: RunConfig, arm: Arm) -> RunConfig:
    """The run config of one arm: its decoder condition, and a class-conditional prior for arm (d)."""
    stage: DecoderStage = replace(getattr(cfg, arm.section), condition=arm.condition)
    prior = replace(cfg.prior, class_conditional=arm.class_prior)
    return replace(cfg, prior=prior, **{arm.section: stage})


def _check_fair(cfg: RunConfig) -> None:
    d, b = cfg.decoder, cfg.baseline
    if d.net != b.net or d.train.total_nimg != b.train.total_nimg or d.train.batch_size != b.train.batch_size:
        raise VcdmError("decoder and baseline must share net, train.total_nimg and train.batch_size: the "
                        "benchmark compares the arms at the same U-Net size and image budget")  # fmt: skip


@dataclass
class Splits:
    train: ImageData  # what every stage (and the evaluation classifier) trains on
    reference: ImageData  # the FID / precision-recall reference
    heldout: ImageData  # len(seeds) * n real images; set j is rows [j * n, (j + 1) * n)
    n: int  # images per sample set


def load_splits(cfg: RunConfig, num_sets: int, n: int, reference_size: int | None = None) -> Splits:
    """Training, reference and held-out images: the embedded MNIST's splits, else a fixed split of the data."""
    d = cfg.data
    if d.source == "mnist":
        opts = {"image_size": d.image_size, "channels": d.channels}
        train = load_dataset(d)
        reference = load_mnist(cfg.eval.reference_split, limit=reference_size, **opts)
        heldout = load_mnist(cfg.eval.heldout_split, limit=num_sets * n, **opts)
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
    data_path: str | Path | None = None,
    num_samples: int | None = None,
    budget_fractions: Sequence[float] = (0.125, 0.25, 0.5, 1.0),
    reference_size: int | None = None,
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
        data_path: an image folder or .npz with labels instead of cfg.data.source.
        num_samples: images per sample set (default cfg.eval.num_samples); all arms use the same count.
        budget_fractions: decoder (and prior) budgets, as fractions of the full one, at which arms (a)
            and (b) (and the prior) are scored along the way; the decoders train in increments (the loop
            resumes exactly).
        reference_size: use only the first N reference images (default: the whole split, at most 10k).
        force: delete an out_dir that holds a benchmark of a different config.
    Returns:
        The report's path.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    cfg = scale_budgets(cfg or quality_config(), scale)
    if data_path is not None:
        cfg = replace(cfg, data=replace(cfg.data, source=str(data_path)))
    _check_fair(cfg)
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise VcdmError(f"seeds must be distinct non-negative integers (at least one), got {seeds}")
    fractions = sorted({float(f) for f in budget_fractions} | {1.0})
    if not 0 < fractions[0]:
        raise VcdmError(f"budget fractions must lie in (0, 1], got {list(budget_fractions)}")
    if (out / "config.json").is_file() and to_dict(load_config(out / "config.json")) != to_dict(cfg):
        if not force:
            raise VcdmError(f"{out} holds a quality benchmark of another config; pass --force to start over")
        shutil.rmtree(out)
    save_config(out, cfg)
    log = dist.print0

    splits = load_splits(cfg, len(seeds), num_samples or cfg.eval.num_samples, reference_size)
    n, train = splits.n, splits.train
    log(f"data: {train.source}, {len(train)} training images, {len(splits.reference)} reference, "
        f"{len(splits.heldout)} held-out; {n} samples x {len(seeds)} seeds per arm")  # fmt: skip
    params = {"seeds": seeds, "n": n, "fractions": fractions, "reference": len(splits.reference),
              "data": train.source, "train": len(train)}  # fmt: skip
    res = _Results(out / "results.json", params)
    extractor, clf_path = get_classifier(train, cfg.eval, progress=progress)
    ref = build_reference(extractor, splits.reference, train, splits.heldout)
    k = cfg.eval.k

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
    runs = {arm.key: out / arm.key for arm in ARMS}
    cfgs = {arm.key: arm_config(cfg, arm) for arm in ARMS}
    for arm in ARMS:
        save_config(runs[arm.key], cfgs[arm.key])
    run_b, cfg_b = runs[TWO.key], cfgs[TWO.key]
    if cfg.embedder.kind == "learned" and not stage_done(run_b / "embedder", cfg.embedder.train.total_nimg):
        train_embedder(run_b, cfg_b, train, progress=progress)
    if not (run_b / "embeddings.safetensors").is_file():
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
                train_prior(run_b, c, train, progress=progress)
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
                images = _sample_arm(runs[arm.key], arm, seeds[0], n, cfg.sample, train.num_classes)[0]
                log(f"{arm.title} at {budget} images: FID {evaluate(key, images)['fid']:.3f}")

    # ---- (c), and (d) with its class-conditional prior ----
    full = cfg.decoder.train.total_nimg
    _train_decoder_to(runs[CLASS.key], cfgs[CLASS.key], CLASS, train, full, progress)
    run_d = runs[CLASS_TWO.key]
    if not (run_d / "embeddings.safetensors").is_file():
        shutil.copyfile(run_b / "embeddings.safetensors", run_d / "embeddings.safetensors")
    if not stage_done(run_d / "prior", cfg.prior.train.total_nimg):
        train_prior(run_d, cfgs[CLASS_TWO.key], train, progress=progress)
    _train_decoder_to(run_d, cfgs[CLASS_TWO.key], CLASS_TWO, train, full, progress)

    # ---- final evaluation: every arm, the oracle and the floor, on every seed set ----
    for j, seed in enumerate(seeds):
        rows = slice(j * n, (j + 1) * n)
        if res.get(f"final/{FLOOR}/{seed}") is None:
            evaluate(f"final/{FLOOR}/{seed}", splits.heldout.as_float(rows), memo=j == 0)
        for arm in ARMS:
            key = f"final/{arm.key}/{seed}"
            if res.get(key) is not None:
                continue
            images, emb, timing = _sample_arm(runs[arm.key], arm, seed, n, cfg.sample, train.num_classes,
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

    info = {"classifier": extractor.name, "classifier_path": str(clf_path), "seconds": time.perf_counter() - t_start,
            "accuracy": classifier_accuracy(extractor, splits.reference), "reference": splits.reference.source}  # fmt: skip
    return write_report(out, cfg, res.data, runs, info)


def _train_decoder_to(
    run: Path, cfg: RunConfig, arm: Arm, data: ImageData, budget: int, progress: bool
) -> None:
    """Train an arm's decoder until `budget` images (resuming from its last checkpoint)."""
    section = arm.section
    if stage_done(run / section, budget):
        return
    st = getattr(cfg, section)
    c = replace(cfg, **{section: replace(st, train=replace(st.train, total_nimg=budget))})
    train_decoder(run, c, data, stage=section, progress=progress)


def _sample_prior(run: Path, seeds: list[int], labels: torch.Tensor | None, s: SampleConfig) -> torch.Tensor:
    """Normalised embeddings drawn from a run's exported prior alone (no decoder yet): (len(seeds), D)."""
    device = dist.device()
    prior, meta = load_model(run / "prior", "prior")
    prior, diffusion = prior.to(device), from_dict(DiffusionConfig, meta["diffusion"])
    options = {"heun": {"s_churn": s.s_churn}, "ddim": {"eta": s.eta}}.get(s.prior_sampler, {})
    out = []
    with torch.no_grad():
        for i in range(0, len(seeds), s.batch_size):
            cond = None if labels is None else {"label": labels[i : i + s.batch_size].to(device)}
            out.append(sample_stage(prior, diffusion, (meta["net"]["emb_dim"],), seeds[i : i + s.batch_size], cond,
                                    sampler=s.prior_sampler, num_steps=s.prior_num_steps, guidance=s.prior_guidance,
                                    options=options, device=device).cpu())  # fmt: skip
    return torch.cat(out)


def _decode(pipe: Pipeline, seeds: list[int], emb: torch.Tensor, labels: torch.Tensor | None,
            s: SampleConfig) -> torch.Tensor:  # fmt: skip
    """Decode given normalised embeddings (the oracle arm), batched like `Pipeline.__call__`."""
    out, device = [], torch.device(pipe.device)
    for i in range(0, len(seeds), s.batch_size):
        lab = None if labels is None else labels[i : i + s.batch_size].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
            x = pipe.sample_images(seeds[i : i + s.batch_size], emb[i : i + s.batch_size].to(device), lab, s)
        out.append(x.float().clamp(-1, 1).cpu())
    return torch.cat(out)


def _sample_arm(run: Path, arm: Arm, seed: int, n: int, s: SampleConfig, num_classes: int, *,
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
        for i in range(0, n, s.batch_size):
            lab = None if labels is None else labels[i : i + s.batch_size].to(pipe.device)
            pipe.sample_embeddings(seeds[i : i + s.batch_size], lab, s).cpu()  # .cpu(): wait for the device
        timing["prior_seconds"] = time.perf_counter() - t0
        timing["prior_share"] = dg.time_share(timing["prior_seconds"], seconds)
    return o.images, emb, timing


# ---- the report ----

_ROWS = ((FLOOR, "real held-out images (floor)"), (SINGLE.key, SINGLE.title), (TWO.key, TWO.title),
         (ORACLE, "(b) oracle: decoder given real held-out embeddings"), (CLASS.key, CLASS.title),
         (CLASS_TWO.key, CLASS_TWO.title))  # fmt: skip
_FIGURES = ("fid", "precision", "recall", "class_tv", "near_copy")


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Seed statistics of every figure of every row, the relative FID changes and the oracle share."""
    seeds = data["params"]["seeds"]
    rows = {}
    for name, _ in _ROWS:
        found = [data[f"final/{name}/{s}"] for s in seeds if f"final/{name}/{s}" in data]
        if found:
            rows[name] = {f: dg.seed_summary([r[f] for r in found]) for f in _FIGURES}
    out: dict[str, Any] = {"rows": rows}

    def fid(name: str) -> float:
        return rows[name]["fid"]["mean"] if name in rows else float("nan")

    for new, base in ((TWO.key, SINGLE.key), (CLASS_TWO.key, CLASS.key)):
        per_seed = [dg.relative_change(data[f"final/{new}/{s}"]["fid"], data[f"final/{base}/{s}"]["fid"])
                    for s in seeds if f"final/{new}/{s}" in data and f"final/{base}/{s}" in data]  # fmt: skip
        out[f"{new}_vs_{base}"] = {"relative": dg.relative_change(fid(new), fid(base)), "per_seed": per_seed}
    out["oracle_share"] = dg.oracle_share(fid(SINGLE.key), fid(TWO.key), fid(ORACLE))
    return out


def _pm(s: dict[str, float], digits: int) -> str:
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _params(path: Path) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(path / "model.safetensors").values())


def write_report(
    out: Path, cfg: RunConfig, data: dict[str, Any], runs: dict[str, Path], info: dict[str, Any]
) -> Path:
    """Write report.md and fid_vs_budget.png from the measured figures; returns the report's path."""
    p, s = data["params"], cfg.sample
    summ = summarize(data)
    data = {**data, "summary": summ}
    atomic_write_text(out / "results.json", json.dumps(data, indent=1) + "\n")
    lines = [
        "# Two-stage vs single-stage sampling at equal image-model compute",
        "",
        f"Data: {p['data']}, {p['train']:,} training images; FID reference {info['reference']} ({p['reference']:,} "
        f"images); {p['n']:,} samples per set, sampling seeds {p['seeds']} (mean ± std over seeds). Every decoder: "
        f"the same U-Net, {cfg.decoder.train.total_nimg:,} training images, batch {cfg.decoder.train.batch_size}. "
        f"Sampling: decoder {s.sampler} with {s.num_steps} steps ({s.precision}), prior {s.prior_sampler} with "
        f"{s.prior_num_steps} steps, guidance {s.guidance} / {s.prior_guidance}. Class-conditional arms get label "
        "= image seed % K (uniform).",
        "",
        f"Features: the evaluation classifier `{info['classifier']}` (accuracy {info['accuracy']:.4f} on the "
        f"reference), cached at `{info['classifier_path']}`. Class TV: distance of the predicted-class histogram "
        "from uniform. Near copies: share of samples closer to a training image than 99% of held-out images are.",
        "",
        "| set | FID | precision | recall | class TV | near copies |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, title in _ROWS:
        if name in summ["rows"]:
            r = summ["rows"][name]
            lines.append(f"| {title} | {_pm(r['fid'], 3)} | {_pm(r['precision'], 3)} | {_pm(r['recall'], 3)} | "
                         f"{_pm(r['class_tv'], 3)} | {_pm(r['near_copy'], 3)} |")  # fmt: skip
    b_a, d_c = summ[f"{TWO.key}_vs_{SINGLE.key}"], summ[f"{CLASS_TWO.key}_vs_{CLASS.key}"]
    verdict = "met" if b_a["relative"] <= GOAL else "not met"
    lines += [
        "",
        f"**(b) vs (a): FID {_pct(b_a['relative'])}** (per seed: {', '.join(_pct(x) for x in b_a['per_seed'])}); "
        f"the goal of {_pct(GOAL)} or better is {verdict}. (d) vs (c): FID {_pct(d_c['relative'])} (per seed: "
        f"{', '.join(_pct(x) for x in d_c['per_seed'])}). Oracle share, (FID_a - FID_b) / (FID_a - FID_oracle): "
        f"{summ['oracle_share']:.2f} (VCDM reports 0.81-0.87).",
        "",
    ]
    # FID along the decoders' training, and the prior's Frechet distance along its own.
    budgets = sorted(
        {int(k.split("/")[2]) for k in data if k.startswith("curve/")} | {cfg.decoder.train.total_nimg}
    )
    curve = {}
    for arm in (SINGLE, TWO):
        pts = [
            (b, data.get(f"curve/{arm.key}/{b}") or data.get(f"final/{arm.key}/{p['seeds'][0]}"))
            for b in budgets
        ]
        curve[arm.title] = ([b for b, r in pts if r], [r["fid"] for b, r in pts if r])
    dg.plot_curves(curve, out / "fid_vs_budget.png", title=f"FID vs decoder training images (seed {p['seeds'][0]})",
                   xlabel="decoder training images", ylabel="FID")  # fmt: skip
    lines += ["## FID along training (first seed set)", "", "| decoder images | (a) FID | (b) FID | change |",
              "| ---: | ---: | ---: | ---: |"]  # fmt: skip
    for i, b in enumerate(curve[SINGLE.title][0]):
        fa, fb = curve[SINGLE.title][1][i], curve[TWO.title][1][i]
        lines.append(f"| {b:,} | {fa:.3f} | {fb:.3f} | {_pct(dg.relative_change(fb, fa))} |")
    lines += ["", "![FID vs training images](fid_vs_budget.png)", "",
              "## The prior's own quality", "",
              "Frechet distance between sampled and real held-out embeddings, both normalised as the prior sees "
              f"them. Floor (training vs held-out embeddings): {data['prior_floor']:.4f}.", "",
              "| prior images | Frechet distance |", "| ---: | ---: |"]  # fmt: skip
    for k in sorted((k for k in data if k.startswith("prior_curve/")), key=lambda k: int(k.split("/")[1])):
        lines.append(f"| {int(k.split('/')[1]):,} | {data[k]:.4f} |")
    for arm in (TWO, CLASS_TWO):
        if f"prior_final/{arm.key}" in data:
            lines.append(f"| {arm.title}, final sample set | {data[f'prior_final/{arm.key}']:.4f} |")
    lines += ["", "## Memorisation (first seed set)", "",
              "Each image's distance to its nearest training image in the classifier's features: samples vs "
              "held-out real images (median ratio ~1 and KS ~0: like real images; ratio < 1 with many near copies: "
              "copying; ratio > 1: off the data manifold).", "",
              "| set | median NN distance | held-out median | ratio | 5th pct. | KS | near copies |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, title in _ROWS:
        m = (data.get(f"final/{name}/{p['seeds'][0]}") or {}).get("memorization")
        if m:
            lines.append(f"| {title} | {m['sample_median']:.3f} | {m['heldout_median']:.3f} | {m['median_ratio']:.2f} "
                         f"| {m['sample_p5']:.3f} | {m['ks']:.3f} | {m['near_copy']:.3f} |")  # fmt: skip
    lines += ["", "## Compute", "", "| stage | parameters | images seen | seconds | images/s |",
              "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    stages = [
        ("embedder", TWO, "embedder"),
        ("prior", TWO, "prior"),
        ("class-conditional prior", CLASS_TWO, "prior"),
    ]
    stages += [(f"{arm.title} decoder", arm, arm.section) for arm in ARMS]
    for title, arm, name in stages:
        path = runs[arm.key] / name
        if (path / "model.json").is_file():
            t = dg.throughput(json.loads((path / "model.json").read_text()))
            lines.append(f"| {title} | {_params(path):,} | {t['nimg']:,} | {t['seconds']:.0f} | "
                         f"{t['images_per_second']:.0f} |")  # fmt: skip
    lines += ["", f"Sampling {p['n']:,} images (first seed set):", "",
              "| arm | seconds | images/s | prior's share of the time |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for arm in ARMS:
        t = data.get(f"timing/{arm.key}")
        if t:
            share = f"{t['prior_share']:.1%}" if "prior_share" in t else "-"
            lines.append(f"| {arm.title} | {t['seconds']:.1f} | {t['images_per_second']:.1f} | {share} |")
    lines += ["", f"Wall time of this invocation: {info['seconds'] / 60:.1f} min (stages reused from an earlier, "
              "interrupted invocation are not counted; their own seconds are in the table). Timings were taken on "
              "a machine shared with other jobs and are only indicative.", "",
              "Every figure is in `results.json`; each arm's run directory holds its config and exported models.",
              "", "## Samples (first 64 of the first seed set)", "",
              "| " + " | ".join(arm.title for arm in ARMS) + " |", "| --- | --- | --- | --- |",
              "| " + " | ".join(f"![{arm.key}](samples_{arm.key}.png)" for arm in ARMS) + " |", ""]  # fmt: skip
    atomic_write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"
