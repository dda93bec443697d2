"""`vcdm bench quality`: two-stage vs single-stage FID at equal image-model compute (vcdm.quality)."""

from __future__ import annotations

import argparse
import time

from vcdm.errors import VcdmError

DESCRIPTION = """Train four arms with the same U-Net and the same image budget: (a) single-stage unconditional,
(b) two-stage (embedder + prior + embedding-conditioned decoder), (c) class-conditional, (d) class-conditional
two-stage; sample each with the same sampler and step count for several seed sets, and write report.md with
FID / precision / recall / class balance (mean and spread over seeds), the relative FID change of (b) vs (a)
and (d) vs (c), FID along training (fid_vs_budget.png), and diagnostics: the metric's floor (real held-out
images), an oracle arm (the decoder given real embeddings), the prior's Frechet distance, memorisation and
time. An interrupted benchmark resumes where it stopped."""

EXAMPLES = """examples:
  vcdm bench quality                                  # embedded MNIST, CPU configuration (~20 min on 2 cores)
  vcdm bench quality --scale 0.25 --num-samples 500   # a quick look: a quarter of every budget
  vcdm bench quality --train-seeds 0 1 2              # every arm trained 3 times: the spread over training
  vcdm bench quality --data images/ --scale 8         # your labelled data, larger budgets (a GPU)
  vcdm bench quality --data emoji --preset emoji --arms single two_stage   # (a) vs (b) only, on RGB emoji
  vcdm bench quality --set decoder.net.base_channels=32 --set baseline.net.base_channels=32"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by `vcdm bench quality` and bench/two_stage_vs_single_stage.py)."""
    p.add_argument("--out", default="runs/quality", help="output directory (default: runs/quality)")
    p.add_argument("--data", metavar="PATH", help="an image folder (class subfolders) or .npz with labels; "
                   "default: the embedded MNIST")  # fmt: skip
    p.add_argument("--scale", type=float, default=1.0, help="multiply every training budget (default: 1; e.g. "
                   "0.25 for a quick CPU check, 4 or more on a GPU)")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                   help="sampling seed sets; mean and spread are over them (default: 0 1 2)")  # fmt: skip
    p.add_argument("--train-seeds", type=int, nargs="+", metavar="SEED",
                   help="train every arm once per seed (every stage's train.seed) into OUT/train_seed_<s>/ and "
                   "report the mean and spread over them (default: train once, with the config's seeds)")  # fmt: skip
    p.add_argument("--num-samples", type=int, metavar="N",
                   help="images per sample set, the same for every arm (default: eval.num_samples)")  # fmt: skip
    p.add_argument("--budgets", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0], metavar="FRACTION",
                   help="fractions of the decoder and prior budgets at which (a), (b) and the prior are scored "
                   "along the way (default: 0.125 0.25 0.5 1)")  # fmt: skip
    p.add_argument("--reference-size", type=int, metavar="N",
                   help="FID reference images (default: the whole reference split, at most 10,000)")  # fmt: skip
    p.add_argument("--arms", nargs="+", metavar="ARM",
                   help="the arms to train and score (default: all four): single and two_stage (required), class "
                   "and class_two_stage (optional; they double the training), e.g. --arms single two_stage")  # fmt: skip
    p.add_argument("--force", action="store_true", help="start over in an --out that holds another config")
    p.add_argument("--preset", help="start from a named config (mnist, tiny) instead of the benchmark's own")
    p.add_argument("--config", metavar="FILE", help="start from a JSON config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one config field (repeatable), e.g. --set sample.num_steps=18")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `bench` (with its `quality` subcommand) to the `vcdm` parser's subcommands."""
    bench = subparsers.add_parser("bench", help="benchmarks: quality (two-stage vs single-stage FID)",
                                  description="Benchmarks that measure the method on your data.")  # fmt: skip
    sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    q = sub.add_parser("quality", help="two-stage vs single-stage FID at equal image-model compute",
                       description=DESCRIPTION, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_arguments(q)
    bench.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    """Run the benchmark the parsed arguments describe and print where the report is."""
    from vcdm.config import apply_overrides, load_config, preset
    from vcdm.quality import quality_config, run_quality_benchmark

    if getattr(args, "bench", "quality") != "quality":
        raise VcdmError(f"unknown benchmark {args.bench!r}; choose: quality")
    if args.config and args.preset:
        raise VcdmError("give --config or --preset, not both")
    cfg = (
        load_config(args.config) if args.config else preset(args.preset) if args.preset else quality_config()
    )
    cfg = apply_overrides(cfg, args.overrides)
    t0 = time.perf_counter()
    report = run_quality_benchmark(args.out, cfg, scale=args.scale, seeds=args.seeds, train_seeds=args.train_seeds,
                                   data_path=args.data, num_samples=args.num_samples, budget_fractions=args.budgets,
                                   reference_size=args.reference_size, arms=args.arms, force=args.force,
                                   progress=not args.no_progress)  # fmt: skip
    print(f"quality benchmark finished in {(time.perf_counter() - t0) / 60:.1f} min; see {report}")
