"""`vcdm config [RUN]`: print the resolved config of a preset or a run as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from vcdm.cli.common import add_config_args, fresh_config


def add_parser(sub: Any) -> None:
    p = sub.add_parser("config", help="print the resolved config of a preset or run as JSON")
    p.add_argument("run", metavar="RUN", nargs="?", help="run directory (prints its config.json with overrides "
                   "applied, without saving)")  # fmt: skip
    add_config_args(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcdm.config import apply_overrides, to_dict
    from vcdm.runs import RunDir

    if args.run and RunDir(args.run).config.is_file():
        cfg = apply_overrides(RunDir(args.run).load_config(), args.overrides)
    else:
        cfg = fresh_config(args)
    print(json.dumps(to_dict(cfg), indent=2))
