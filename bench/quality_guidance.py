"""Classifier-free guidance on the quality benchmark's trained arms: FID against the decoder's guidance weight.

Run as `.venv/bin/python bench/quality_guidance.py --out DIR [--weights 1 1.5 2 3] [--seed 0]` after
`vcdm bench quality --out DIR [--train-seeds ...]`. It trains nothing: for every training replicate in DIR
(DIR itself, or DIR/train_seed_<s>/) it samples sampling-seed set SEED of each conditional arm, (b)
two-stage, (c) class-conditional and (d) class-conditional two-stage, with the decoder's classifier-free
guidance weight w (vcdm.guidance.classifier_free; the prior keeps the benchmark's own weight), scores it as
the benchmark does (FID, precision, recall on the evaluation classifier's features, the same sample count
and reference) and prints a markdown table: FID per replicate, the mean over replicates and its change
against (a) single-stage at w = 1 (an unconditional model has nothing to guide). Guidance evaluates the
decoder twice per step (one batched call), so w != 1 doubles the decoder's sampling compute; the table
gives the sampling seconds beside each FID. The table is also written to DIR/guidance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

# Idle OpenMP threads sleep rather than spin (set before torch loads): see bench/unet_speed.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from vcdm.config import load_config  # noqa: E402
from vcdm.errors import VcdmError  # noqa: E402
from vcdm.eval.diagnostics import relative_change  # noqa: E402
from vcdm.eval.scoring import score  # noqa: E402
from vcdm.fileio import atomic_write_text  # noqa: E402
from vcdm.quality import ARMS, load_splits, prepare_evaluation, sample_arm, select_arms  # noqa: E402

SINGLE = ARMS[0]


def replicates(out: Path) -> list[Path]:
    """The benchmark's replicate directories in `out` (each holds results.json and one run per arm)."""
    subs = sorted(out.glob("train_seed_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    found = [p for p in subs if (p / "results.json").is_file()] or (
        [out] if (out / "results.json").is_file() else []
    )
    if not found:
        raise VcdmError(f"{out}: no quality benchmark here (run `vcdm bench quality --out {out}` first)")
    return found


def scan(out: Path, weights: list[float], seed: int) -> list[dict]:
    """FID of every arm at every guidance weight (only w = 1 for (a)) for each replicate in `out`."""
    rows = []
    ev = None
    for rep in replicates(out):
        cfg = load_config(rep / "config.json")
        params = json.loads((rep / "results.json").read_text())["params"]
        if ev is None:  # every replicate shares the data, the classifier and the reference
            splits = load_splits(cfg, len(params["seeds"]), params["n"], params["reference"])
            ev = prepare_evaluation(splits, cfg, progress=False)
        for arm in select_arms(params.get("arms")):  # the arms the benchmark ran (`--arms`)
            for w in [1.0] if arm is SINGLE else weights:
                s = replace(cfg.sample, guidance=w)
                images, _, t = sample_arm(rep / arm.key, arm, seed, params["n"], s, ev.ref.num_classes)
                r = score(images, ev.extractor, ev.ref)
                rows.append({"replicate": rep.name, "arm": arm.title, "w": w, "fid": r["fid"],
                             "precision": r["precision"], "recall": r["recall"], "seconds": t["seconds"]})  # fmt: skip
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: one line per (arm, w), FID per replicate, mean, change vs (a) at w = 1."""
    reps = list(dict.fromkeys(r["replicate"] for r in rows))
    keys = list(dict.fromkeys((r["arm"], r["w"]) for r in rows))

    def mean(arm: str, w: float, field: str) -> float:
        return statistics.fmean(r[field] for r in rows if r["arm"] == arm and r["w"] == w)

    base = mean(SINGLE.title, 1.0, "fid")
    lines = [f"| arm | w | {' | '.join(f'FID {r}' for r in reps)} | mean FID | vs (a) | precision | recall | "
             "sampling s |", "| --- | ---: |" + " ---: |" * (len(reps) + 5)]  # fmt: skip
    for arm, w in keys:
        fids = [
            next(r["fid"] for r in rows if (r["arm"], r["w"], r["replicate"]) == (arm, w, rep))
            for rep in reps
        ]
        f = mean(arm, w, "fid")
        lines.append(f"| {arm} | {w:g} | {' | '.join(f'{x:.2f}' for x in fids)} | {f:.2f} | "
                     f"{relative_change(f, base) * 100:+.1f}% | {mean(arm, w, 'precision'):.3f} | "
                     f"{mean(arm, w, 'recall'):.3f} | {mean(arm, w, 'seconds'):.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="a `vcdm bench quality` output directory")
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0], metavar="W",
                    help="decoder guidance weights (default: 1 1.5 2 3)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="the sampling seed set (default: 0)")
    args = ap.parse_args(argv)
    try:
        rows = scan(Path(args.out), args.weights, args.seed)
    except VcdmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = table(rows)
    atomic_write_text(Path(args.out) / "guidance.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
