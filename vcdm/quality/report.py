"""The quality benchmark's reports: one training replicate's report.md, and the summary over several."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vcdm.config import RunConfig
from vcdm.eval import diagnostics as dg
from vcdm.fileio import atomic_write_text
from vcdm.quality.arms import CLASS, CLASS_TWO, FLOOR, GOAL, ORACLE, SINGLE, TWO, select_arms
from vcdm.runs import num_params, read_meta

_ROWS = ((FLOOR, "real held-out images (floor)"), (SINGLE.key, SINGLE.title), (TWO.key, TWO.title),
         (ORACLE, "(b) oracle: decoder given real held-out embeddings"), (CLASS.key, CLASS.title),
         (CLASS_TWO.key, CLASS_TWO.title))  # fmt: skip
_FIGURES = ("fid", "precision", "recall", "class_tv", "near_copy")
_PAIRS = ((TWO.key, SINGLE.key), (CLASS_TWO.key, CLASS.key))


def _row_stats(records: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and spread of every figure of every row, over its records (sampling seeds or replicates)."""
    return {name: {f: dg.seed_summary([r[f] for r in found]) for f in _FIGURES} for name, found in records.items()
            if found}  # fmt: skip


def _changes(fid: dict[str, float], per: dict[str, list[float]]) -> dict[str, Any]:
    """Relative FID changes of (b) vs (a) and (d) vs (c) (of the pairs whose arms ran), and the oracle share,
    from row mean FIDs."""
    out: dict[str, Any] = {}
    for new, base in _PAIRS:
        if math.isnan(fid[new]) or math.isnan(fid[base]):  # an arm not chosen (`--arms`)
            continue
        out[f"{new}_vs_{base}"] = {
            "relative": dg.relative_change(fid[new], fid[base]),
            **per[f"{new}_vs_{base}"],
        }
    out["oracle_share"] = dg.oracle_share(fid[SINGLE.key], fid[TWO.key], fid[ORACLE])
    return out


def _mean_fid(rows: dict[str, Any]) -> dict[str, float]:
    return {name: rows[name]["fid"]["mean"] if name in rows else float("nan") for name, _ in _ROWS}


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Sampling-seed statistics of every figure of every row, the relative FID changes and the oracle share."""
    seeds = data["params"]["seeds"]
    rows = _row_stats({name: [data[f"final/{name}/{s}"] for s in seeds if f"final/{name}/{s}" in data]
                       for name, _ in _ROWS})  # fmt: skip
    per = {f"{new}_vs_{base}": {"per_seed": [
        dg.relative_change(data[f"final/{new}/{s}"]["fid"], data[f"final/{base}/{s}"]["fid"])
        for s in seeds if f"final/{new}/{s}" in data and f"final/{base}/{s}" in data]} for new, base in _PAIRS}  # fmt: skip
    return {"rows": rows, **_changes(_mean_fid(rows), per)}


def summarize_replicates(replicates: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Training-seed statistics: each replicate's row means (over its sampling seeds), then their mean and
    spread over the replicates, and the relative FID changes of the means and of each replicate."""
    per_rep = {ts: summarize(data) for ts, data in replicates.items()}
    means = {ts: {name: {f: r[f]["mean"] for f in _FIGURES} for name, r in s["rows"].items()}
             for ts, s in per_rep.items()}  # fmt: skip
    rows = _row_stats({name: [m[name] for m in means.values() if name in m] for name, _ in _ROWS})
    per = {f"{new}_vs_{base}": {"per_train_seed": [s[f"{new}_vs_{base}"]["relative"] for s in per_rep.values()
                                                   if f"{new}_vs_{base}" in s]} for new, base in _PAIRS}  # fmt: skip
    return {"rows": rows, **_changes(_mean_fid(rows), per), "replicates": per_rep}


def _pm(s: dict[str, float], digits: int) -> str:
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def _table(rows: dict[str, Any]) -> list[str]:
    """The main table: every row's figures as mean ± std."""
    lines = [
        "| set | FID | precision | recall | class TV | near copies |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, title in _ROWS:
        if name in rows:
            lines.append(f"| {title} | {' | '.join(_pm(rows[name][f], 3) for f in _FIGURES)} |")
    return lines


def _share(x: float) -> str:
    return "n/a (the oracle does not beat (a))" if math.isnan(x) else f"{x:.2f}"


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _d_vs_c(d_c: dict[str, Any] | None, per: str) -> str:
    """The report's sentence on the class-conditional pair: its FID change and the changes listed under `per`
    ("per_seed" or "per_train_seed"), or that those arms were not run."""
    if not d_c:
        return "(c) and (d) not run (`--arms`)"
    label = {"per_seed": "seed", "per_train_seed": "training seed"}[per]
    return f"(d) vs (c): FID {_pct(d_c['relative'])} (per {label}: {', '.join(_pct(x) for x in d_c[per])})"


def write_report(
    out: Path, cfg: RunConfig, data: dict[str, Any], runs: dict[str, Path], info: dict[str, Any]
) -> Path:
    """Write report.md and fid_vs_budget.png from the measured figures; returns the report's path."""
    p, s = data["params"], cfg.sample
    arms = select_arms(p.get("arms"))  # results written before `--arms` existed ran all four
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
        *_table(summ["rows"]),
    ]
    b_a, d_c = summ[f"{TWO.key}_vs_{SINGLE.key}"], summ.get(f"{CLASS_TWO.key}_vs_{CLASS.key}")
    verdict = "met" if b_a["relative"] <= GOAL else "not met"
    d_vs_c = _d_vs_c(d_c, "per_seed")
    lines += [
        "",
        f"**(b) vs (a): FID {_pct(b_a['relative'])}** (per seed: {', '.join(_pct(x) for x in b_a['per_seed'])}); "
        f"the goal of {_pct(GOAL)} or better is {verdict}. {d_vs_c}. Oracle share, (FID_a - FID_b) / (FID_a - "
        f"FID_oracle): {_share(summ['oracle_share'])} (VCDM reports 0.81-0.87).",
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
        ("CLIP (embedder.kind clip-trained)", TWO, "clip"),
        ("prior", TWO, "prior"),
        ("class-conditional prior", CLASS_TWO, "prior"),
    ]
    stages += [(f"{arm.title} decoder", arm, arm.section) for arm in arms]
    for title, arm, name in stages:
        if arm not in arms:
            continue
        path = runs[arm.key] / name
        meta = read_meta(path)
        if meta is not None:
            t = dg.throughput(meta)
            lines.append(f"| {title} | {num_params(path):,} | {t['nimg']:,} | {t['seconds']:.0f} | "
                         f"{t['images_per_second']:.0f} |")  # fmt: skip
    lines += ["", f"Sampling {p['n']:,} images (first seed set):", "",
              "| arm | seconds | images/s | prior's share of the time |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for arm in arms:
        t = data.get(f"timing/{arm.key}")
        if t:
            share = f"{t['prior_share']:.1%}" if "prior_share" in t else "-"
            lines.append(f"| {arm.title} | {t['seconds']:.1f} | {t['images_per_second']:.1f} | {share} |")
    lines += ["", f"Wall time of this invocation: {info['seconds'] / 60:.1f} min (stages reused from an earlier, "
              "interrupted invocation are not counted; their own seconds are in the table). Timings were taken on "
              "a machine shared with other jobs and are only indicative.", "",
              "Every figure is in `results.json`; each arm's run directory holds its config and exported models.",
              "", "## Samples (first 64 of the first seed set)", "",
              "| " + " | ".join(arm.title for arm in arms) + " |", "| --- " * len(arms) + "|",
              "| " + " | ".join(f"![{arm.key}](samples_{arm.key}.png)" for arm in arms) + " |", ""]  # fmt: skip
    atomic_write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"


def _verdict(change: dict[str, Any], key: str) -> str:
    per = change[key]
    hits = sum(x <= GOAL for x in per)
    return (f"the goal of {_pct(GOAL)} or better is {'met' if change['relative'] <= GOAL else 'not met'} by the "
            f"mean ({hits} of {len(per)} individually)")  # fmt: skip


def write_summary(
    out: Path, cfg: RunConfig, replicates: dict[int, dict[str, Any]], info: dict[str, Any]
) -> Path:
    """Write out/report.md and summary.json over training replicates (each with its own report in
    out/train_seed_<s>/); returns the report's path."""
    summ = summarize_replicates(replicates)
    atomic_write_text(out / "summary.json", json.dumps(summ, indent=1) + "\n")
    first = next(iter(replicates.values()))["params"]
    train_seeds, s = list(replicates), cfg.sample
    lines = [
        f"# Two-stage vs single-stage sampling at equal image-model compute, {len(train_seeds)} training seeds",
        "",
        f"Data: {first['data']}, {first['train']:,} training images; FID reference {info['reference']} "
        f"({first['reference']:,} images); features of the evaluation classifier `{info['classifier']}` "
        f"(accuracy {info['accuracy']:.4f}). Every arm was trained once per training seed {train_seeds} (every "
        f"stage's train.seed; same data, same budgets: {cfg.decoder.train.total_nimg:,} images per decoder, batch "
        f"{cfg.decoder.train.batch_size}) and each replicate sampled {first['n']:,} images per sampling seed set "
        f"{first['seeds']} ({s.sampler}, {s.num_steps} steps, {s.precision}; prior {s.prior_sampler}, "
        f"{s.prior_num_steps} steps). Figures: mean ± std over the training seeds of each replicate's mean over "
        "its sampling seeds.",
        "",
        *_table(summ["rows"]),
    ]
    b_a, d_c = summ[f"{TWO.key}_vs_{SINGLE.key}"], summ.get(f"{CLASS_TWO.key}_vs_{CLASS.key}")
    d_vs_c = _d_vs_c(d_c, "per_train_seed")
    cd_head, cd_rule = (" (c) FID | (d) FID | (d) vs (c) |", " ---: | ---: | ---: |") if d_c else ("", "")
    lines += [
        "",
        f"**(b) vs (a): FID {_pct(b_a['relative'])}** (per training seed: "
        f"{', '.join(_pct(x) for x in b_a['per_train_seed'])}); {_verdict(b_a, 'per_train_seed')}. {d_vs_c}. Oracle "
        f"share, (FID_a - FID_b) / (FID_a - FID_oracle): {_share(summ['oracle_share'])} (VCDM reports 0.81-0.87).",
        "",
        "## Per training seed (means over the sampling seeds)",
        "",
        f"| training seed | (a) FID | (b) FID | (b) vs (a) | oracle FID |{cd_head} report |",
        f"| ---: | ---: | ---: | ---: | ---: |{cd_rule} --- |",
    ]
    for ts, rep in summ["replicates"].items():
        fid = _mean_fid(rep["rows"])
        cd = (f" {fid[CLASS.key]:.3f} | {fid[CLASS_TWO.key]:.3f} | "
              f"{_pct(rep[f'{CLASS_TWO.key}_vs_{CLASS.key}']['relative'])} |" if d_c else "")  # fmt: skip
        lines.append(
            f"| {ts} | {fid[SINGLE.key]:.3f} | {fid[TWO.key]:.3f} | {_pct(rep[f'{TWO.key}_vs_{SINGLE.key}']['relative'])} "
            f"| {fid[ORACLE]:.3f} |{cd} [report](train_seed_{ts}/report.md) |"
        )
    spread = [summ["rows"][k]["fid"]["std"] for k in (SINGLE.key, TWO.key) if k in summ["rows"]]
    within = [r["rows"][k]["fid"]["std"] for r in summ["replicates"].values() for k in (SINGLE.key, TWO.key)
              if k in r["rows"]]  # fmt: skip
    if spread and within:
        lines += ["", f"Spread of (a) and (b)'s FID over training seeds: {', '.join(f'{x:.2f}' for x in spread)}; "
                  f"over sampling seeds within a replicate: {min(within):.2f}-{max(within):.2f}."]  # fmt: skip
    lines += ["", f"Wall time of this invocation: {info['seconds'] / 60:.1f} min (replicates reused from an earlier "
              "invocation are not counted). Each replicate's report has the curves, the prior's quality, "
              "memorisation, compute and samples; `summary.json` has every figure above.", ""]  # fmt: skip
    atomic_write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"
