"""`vcdm embed RUN`: embed the training set with the run's embedder (for the prior and the decoder)."""

from __future__ import annotations

import argparse
from typing import Any

from vcdm.cli.common import add_config_args, add_verb, run_config


def add_parser(sub: Any) -> None:
    p = add_verb(sub, "embed", "embed the training set with the run's embedder (for prior and decoder)",
                 "Compute embeddings of the dataset (plus embedder.aug_copies augmented copies) and their "
                 "normalisation statistics into RUN/embeddings.safetensors.")  # fmt: skip
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--force", action="store_true", help="recompute existing embeddings")
    add_config_args(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcdm.data import load_dataset
    from vcdm.runs import RunDir, guard
    from vcdm.stages import compute_embeddings

    cfg = run_config(args, args.run)
    path = RunDir(args.run).embeddings
    guard(path, path.exists(), args.force, "embeddings", "recompute them")
    es = compute_embeddings(args.run, cfg, load_dataset(cfg.data), progress=not args.no_progress)
    print(
        f"embedded {es.num_images} images ({len(es.emb)} rows with augmented copies), dim {es.dim} -> {path}"
    )
