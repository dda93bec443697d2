"""`vcdm demo`: train every stage on the embedded MNIST, sample both models, write a report."""

from __future__ import annotations

import argparse
import time
from typing import Any

from vcdm.cli.common import add_config_args, add_verb, fresh_config


def add_parser(sub: Any) -> None:
    p = add_verb(sub, "demo", "train every stage on the embedded MNIST, sample, write a report",
                 "Train the embedder, prior, two-stage decoder and a single-stage baseline of the same size and "
                 "budget, then sample a grid from each and write report.md. An interrupted demo resumes where it "
                 "stopped.")  # fmt: skip
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--num", type=int, default=64, help="samples per grid (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="first sample seed (default: 0)")
    p.add_argument("--force", action="store_true", help="redo a finished demo in --out (deletes it first)")
    add_config_args(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcdm.demo import run_demo

    t0 = time.perf_counter()
    report = run_demo(args.out, fresh_config(args), force=args.force, num_samples=args.num, seed=args.seed,
                      progress=not args.no_progress)  # fmt: skip
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min; see {report}")
