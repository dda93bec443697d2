"""What a change to the MNIST demo buys: train one configuration, then sample and score decoder variants.

Run as `.venv/bin/python bench/demo_tuning.py --out /tmp/tuning/NAME [--set FIELD=VALUE ...]
[--variants dpmpp_2m:20:1.0 dpmpp_2m:20:1.5 heun:18:1.0] [--num 1000] [--arm decoder]`.

Trains the stages of --stages (embedder, prior, decoder by default; already trained ones in --out are reused) of
the `mnist` preset with the --set overrides, then draws --num samples (seeds 0 .. num-1) for each variant
SAMPLER:STEPS:GUIDANCE and scores them exactly as `vcdm demo` does (vcdm.demo.score_arms: FID, precision,
recall and class TV on the evaluation classifier's features, reference mnist:test). Prints the embedder's 10-NN
digit accuracy and one table row per variant; appends the rows to OUT/tuning.jsonl. docs/demo/tuning.md is
one such run per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from vcdm.config import apply_overrides, preset  # noqa: E402
from vcdm.errors import VcdmError, exit_status  # noqa: E402


def parse_variant(text: str) -> tuple[str, int, float]:
    """'SAMPLER:STEPS:GUIDANCE' -> (sampler, steps, guidance), with a one-line error naming the bad part."""
    parts = text.split(":")
    try:
        sampler, steps, guidance = parts
        return sampler, int(steps), float(guidance)
    except ValueError:
        raise VcdmError(
            f"--variants: expected SAMPLER:STEPS:GUIDANCE (e.g. dpmpp_2m:20:1.5), got {text!r}"
        ) from None


def run(args: argparse.Namespace) -> list[dict]:
    from vcdm.data import load_dataset, save_grid
    from vcdm.demo import embedder_knn, score_arms
    from vcdm.pipeline import Pipeline
    from vcdm.runs import RunDir
    from vcdm.stages import compute_embeddings, get_kind, resolve_for_data, train_stage

    variants = [parse_variant(v) for v in args.variants]
    out = Path(args.out)
    cfg = apply_overrides(preset(args.preset), args.set)
    data = load_dataset(cfg.data)
    rundir = RunDir(out)
    cfg = resolve_for_data(cfg, data, rundir)
    rundir.save_config(cfg)
    for name in args.stages:
        if name == "prior" and not rundir.embeddings.is_file():
            compute_embeddings(out, cfg, data, progress=False)
        kind = get_kind(name)
        if not rundir.stage_done(kind.folder, kind.train_config(cfg).total_nimg):
            train_stage(name, out, cfg, data, progress=False)
    knn = embedder_knn(out, cfg) if "embedder" in args.stages else None
    rows = []
    pipe = Pipeline.from_run(out, args.arm)
    for sampler, steps, guidance in variants:
        s = replace(cfg.sample, sampler=sampler, num_steps=steps, guidance=guidance)
        t0 = time.perf_counter()
        images = pipe(list(range(args.num)), s, progress=False).images
        seconds = time.perf_counter() - t0
        q = score_arms(cfg, data, {args.arm: images}, False)["rows"][args.arm]
        save_grid(images[:64], out / f"grid_{args.arm}_{sampler}_{steps}_{guidance}.png", nrow=8)
        rows.append({"set": args.set, "arm": args.arm, "sampler": sampler, "steps": steps, "guidance": guidance,
                     "knn": knn, "seconds": seconds} | {k: q[k] for k in ("fid", "precision", "recall", "class_tv")})  # fmt: skip
    with open(out / "tuning.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| overrides | 10-NN | sampler | steps | w | FID | precision | recall | class TV | seconds |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        knn = "-" if r["knn"] is None else f"{r['knn']:.3f}"
        lines.append(f"| {' '.join(r['set']) or '(preset)'} | {knn} | {r['sampler']} | {r['steps']} | "
                     f"{r['guidance']} | {r['fid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['class_tv']:.3f} | {r['seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="run directory (stages already trained there are reused)")
    p.add_argument("--preset", default="mnist")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--stages", nargs="+", default=["embedder", "prior", "decoder"])
    p.add_argument("--arm", default="decoder", help="decoder (two-stage) or baseline (single-stage)")
    p.add_argument("--variants", nargs="+", default=["dpmpp_2m:20:1.0", "dpmpp_2m:20:1.5"])
    p.add_argument("--num", type=int, default=1000)
    return exit_status(lambda args: print(table(run(args))), p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
