"""`vcdm` command line: parse, resolve the config, call the library. Nothing else lives here.

One module per verb (demo, train, embed, sample, upsample, edit, fid, bench, config), each with
`add_parser(sub)` (which sets the verb's handler) and a handler; `common` holds what they share. The verb modules
are imported inside `build_parser`, after `main` has set OMP_WAIT_POLICY, because some load torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from vcdm.errors import VcdmError

VERBS = ("demo", "train", "embed", "sample", "upsample", "autoencode", "edit", "fid", "bench", "config",
         "serve")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from vcdm.cli.common import EPILOG

    ap = argparse.ArgumentParser(
        prog="vcdm",
        description="Two-stage (visual chain-of-thought) diffusion: an embedding prior, then an "
        "embedding-conditioned image decoder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb in VERBS:
        importlib.import_module(f"vcdm.cli.{verb}").add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 on success, 2 on a user error (one line, no traceback), 130/143 when interrupted."""
    # Idle OpenMP threads sleep rather than spin (set before torch loads): on a shared 2-core machine the
    # default spinning makes 2 threads ~5x slower whenever another process holds a core.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from vcdm.training import TrainingInterrupted
    from vcdm.training import distributed as dist

    args = build_parser().parse_args(argv)
    try:
        dist.init()
        args.handler(args)
    except VcdmError as e:
        print(f"vcdm: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        cmd = " ".join(["vcdm", *(argv if argv is not None else sys.argv[1:])])
        print(f"vcdm: {e}. Run the same command again to resume: {cmd}", file=sys.stderr)
        return 128 + int(e.signum)
    return 0


__all__ = ["VERBS", "build_parser", "main"]
