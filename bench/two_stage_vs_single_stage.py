"""The headline experiment: two-stage vs single-stage sampling at equal image-model compute.

Run as `.venv/bin/python bench/two_stage_vs_single_stage.py [--scale 0.25] [--num-samples 500] [--out DIR]`;
the same as `vcdm bench quality` (both call `vcdm.quality.run_quality_benchmark`). On the embedded MNIST
it trains (a) single-stage, (b) two-stage, (c) class-conditional and (d) class-conditional two-stage models
with the same U-Net and image budget, samples each for several seed sets and writes DIR/report.md (FID,
precision, recall, class balance, the relative FID change of (b) vs (a) and (d) vs (c), FID along training,
and the diagnostics: floor, oracle, prior quality, memorisation, time) and DIR/fid_vs_budget.png.

The default (CPU) configuration takes about 20 minutes per training seed on 2 idle cores; --scale multiplies
every training budget (use 4 or more on a GPU, with wider nets through --set); --train-seeds 0 1 2 trains
every arm once per seed and reports the spread over them (at these budgets the training seed moves FID more
than the sampling seed).
Timings on a shared machine are only indicative.
"""

from __future__ import annotations

import argparse
import os
import sys

# Idle OpenMP threads sleep rather than spin (set before torch loads): on a shared CPU the default spinning
# makes torch's threads several times slower whenever another process holds a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from vcdm.cli.bench import DESCRIPTION, EXAMPLES, add_arguments, run  # noqa: E402
from vcdm.errors import exit_status  # noqa: E402
from vcdm.training import distributed as dist  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=DESCRIPTION, epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_arguments(ap)
    args = ap.parse_args(argv)

    def init_and_run() -> None:
        dist.init()
        run(args)

    return exit_status(init_and_run)


if __name__ == "__main__":
    sys.exit(main())
