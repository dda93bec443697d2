"""`vcdm train KIND RUN`: train any registered stage kind through the one generic path."""

from __future__ import annotations

import argparse
from typing import Any

from vcdm.cli.common import add_config_args, add_verb, run_config


def add_parser(sub: Any) -> None:
    from vcdm.stages import KINDS

    kinds = "; ".join(f"{name}: {kind.summary}" for name, kind in KINDS.items())
    p = add_verb(sub, "train", f"train one stage of a run: {' | '.join(KINDS)}",
                 "Train one stage into RUN/STAGE (resumes from its last checkpoint if one exists). The prior and "
                 "the two-stage decoder need `vcdm embed` first.")  # fmt: skip
    p.add_argument("stage", choices=tuple(KINDS), metavar="KIND", help=kinds)
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument(
        "--force", action="store_true", help="delete a finished stage and train it again from scratch"
    )
    add_config_args(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcdm.data import load_dataset
    from vcdm.runs import RunDir, guard
    from vcdm.stages import get_kind, train_stage
    from vcdm.training import distributed as dist

    cfg = run_config(args, args.run)
    kind, run_dir = get_kind(args.stage), RunDir(args.run)
    total = kind.train_config(cfg).total_nimg
    stage_dir = run_dir.stage(kind.folder)
    if dist.rank() == 0:
        guard(stage_dir, run_dir.stage_done(kind.folder, total), args.force,
              f"a {kind.name} model trained for {total} images",
              f"train it again from scratch, or raise the budget with --set {kind.train_path}.total_nimg=N "
              "to continue")  # fmt: skip
    dist.barrier()
    res = train_stage(kind.name, run_dir.path, cfg, load_dataset(cfg.data), progress=not args.no_progress)
    dist.print0(f"{kind.name}: {res.nimg} images in {res.seconds:.0f} s ({res.images_per_second:.0f} img/s); "
                f"exported to {stage_dir}")  # fmt: skip
