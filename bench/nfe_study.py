"""Sampler NFE study: FID against the number of model evaluations (NFE) for each sampler, beside a many-step
reference, on a trained run (issue "Speed", part 3).

Run as `.venv/bin/python bench/nfe_study.py --run runs/demo [--stage decoder baseline] [--num 500]
[--nfe 5 10 20 35] [--samplers euler heun ddim dpmpp_2m] [--reference-nfe 256] [--precision bf16]`.

It trains nothing. For each stage ("decoder": two-stage, the prior's embeddings drawn once per seed with the
run's own prior settings and held fixed, so that only the decoder's sampler varies; "baseline": the
single-stage U-Net) it samples the same seeds with every (sampler, NFE) and with a reference sampler at many
steps, and scores each set as `vcdm demo` does (vcdm.demo.score_arms: FID on the evaluation classifier's
features against the MNIST test split; the held-out valid split as the floor). All rows of a stage share
seeds, hence starting noise (vcdm.seeding), so they differ only by the sampler. Steps for a target NFE: N for
one-evaluation-per-step samplers, (NFE + 1) // 2 for heun (2N - 1 evaluations); the NFE column is counted by
wrapping the decoder, not computed. `ddim` runs with eta = 0 (SampleConfig.eta defaults to 1).

It prints one markdown table per stage (sampler, steps, NFE, FID, FID / reference FID, seconds, and the RMS
pixel distance to the reference images of the same seeds) and writes them, with the command line, to
--report (default docs/nfe/report.md). FID depends on the sample count: compare rows only among themselves.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

# Idle OpenMP threads sleep rather than spin (set before torch loads): see bench/unet_speed.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from vcdm.config import SampleConfig  # noqa: E402
from vcdm.errors import VcdmError  # noqa: E402
from vcdm.fileio import atomic_write_text  # noqa: E402
from vcdm.samplers import SAMPLERS  # noqa: E402

TWO_EVALS = {"heun"}  # samplers with two denoiser calls per step but the last
DEFAULT_SAMPLERS = ["euler", "heun", "ddim", "dpmpp_2m"]
STAGES = {"decoder": "two-stage decoder p(x | y)", "baseline": "single-stage U-Net p(x)"}


def steps_for_nfe(sampler: str, nfe: int) -> int:
    """The most steps whose NFE does not exceed `nfe` (at least one step)."""
    return max(1, (nfe + 1) // 2) if sampler in TWO_EVALS else max(1, nfe)


def nfe_of(sampler: str, steps: int) -> int:
    """Denoiser evaluations of `steps` steps (heun: its last step, to sigma = 0, is a plain Euler step)."""
    return 2 * steps - 1 if sampler in TWO_EVALS else steps


class CountCalls:
    """A guidance wrapper (denoiser -> denoiser) that counts the denoiser's calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, denoiser):
        def counted(x, sigma, cond):
            self.calls += 1
            return denoiser(x, sigma, cond)

        return counted


@dataclass
class Row:
    sampler: str
    steps: int
    nfe: float
    fid: float
    seconds: float
    images: torch.Tensor
    precision: str
    reference: bool = False


class Study:
    """One stage of a run, its fixed seeds (and prior embeddings), and the evaluation it is scored by."""

    def __init__(self, run: Path, stage: str, seeds: list[int], base: SampleConfig, ev) -> None:
        from vcdm.pipeline import Pipeline

        self.counter = CountCalls()
        self.pipe = Pipeline.from_run(run, stage, guidance={"decoder": self.counter})
        self.seeds, self.base, self.ev = seeds, base, ev
        self.given = None
        self.prior_seconds = 0.0
        if "prior" in self.pipe.components:  # two-stage: draw y once, with the run's own prior settings
            t0 = time.perf_counter()
            y = self.pipe.sample(seeds, replace(base, precision="fp32"), until="prior")["prior"]
            self.prior_seconds = time.perf_counter() - t0
            self.given = {"prior": y}

    def row(self, sampler: str, steps: int, precision: str, reference: bool = False) -> Row:
        from vcdm.eval.scoring import score

        cfg = replace(self.base, sampler=sampler, num_steps=steps, precision=precision, eta=0.0)
        self.counter.calls = 0
        t0 = time.perf_counter()
        images = self.pipe(self.seeds, cfg, given=self.given).images
        seconds = time.perf_counter() - t0
        batches = -(-len(self.seeds) // cfg.batch_size)
        fid = score(images, self.ev["extractor"], self.ev["ref"], k=self.ev["k"])["fid"]
        return Row(sampler, steps, self.counter.calls / batches, fid, seconds, images, precision, reference)


def evaluation(run: Path, num: int) -> dict:
    """The demo's evaluation (vcdm.demo.score_arms) for `num` samples: classifier, reference, held-out floor."""
    from vcdm.data import load_dataset, load_mnist
    from vcdm.eval.scoring import build_reference, get_classifier, score
    from vcdm.runs import RunDir

    cfg = RunDir(run).load_config()
    if cfg.data.source != "mnist":
        raise VcdmError(
            f"{run}: the demo's metrics need the embedded MNIST (data.source is {cfg.data.source!r})"
        )
    data = load_dataset(cfg.data)
    extractor, path = get_classifier(data, cfg.eval, progress=False)
    reference = load_mnist(cfg.eval.reference_split)
    heldout = load_mnist(cfg.eval.heldout_split, limit=num)
    ref = build_reference(extractor, reference, data, heldout)
    floor = score(heldout.as_float(), extractor, ref, k=cfg.eval.k)["fid"]
    return {"cfg": cfg, "extractor": extractor, "path": path, "ref": ref, "k": cfg.eval.k, "floor": floor,
            "reference": reference.source, "heldout": heldout.source}  # fmt: skip


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root-mean-square pixel difference of two image sets in [-1, 1], over all images and pixels."""
    return float((a - b).pow(2).mean().sqrt())


def table(rows: list[Row], ref: Row) -> str:
    lines = [
        "| sampler | steps | NFE | FID | FID / reference FID | seconds | RMS to reference |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        name = f"{r.sampler} (reference)" if r.reference else r.sampler
        name += "" if r.precision == ref.precision else f" [{r.precision}]"
        lines.append(f"| {name} | {r.steps} | {r.nfe:g} | {r.fid:.2f} | {r.fid / ref.fid:.3f} | "
                     f"{r.seconds:.1f} | {rms(r.images, ref.images):.4f} |")  # fmt: skip
    return "\n".join(lines)


def within(rows: list[Row], ref: Row, tol: float, max_nfe: float) -> list[str]:
    """Rows at or below `max_nfe` whose FID is within `tol` (relative) of the reference, cheapest first."""
    ok = [r for r in rows if not r.reference and r.nfe <= max_nfe and r.fid <= ref.fid * (1 + tol)]
    return [f"{r.sampler} {r.steps} steps ({r.nfe:g} NFE, {r.fid / ref.fid:.3f})" for r in
            sorted(ok, key=lambda r: (r.nfe, r.fid))]  # fmt: skip


def parse_check(text: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    sampler, _, nfe = text.partition(":")
    if sampler not in SAMPLERS or not nfe.isdigit():
        raise VcdmError(f"--precision-check: expected SAMPLER:NFE (e.g. heun:35), got {text!r}")
    return sampler, int(nfe)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished `vcdm demo` run directory (read only)")
    ap.add_argument("--stage", nargs="+", default=["decoder"], choices=sorted(STAGES),
                    help="decoder (two-stage; the prior held fixed) and/or baseline (default: decoder)")  # fmt: skip
    ap.add_argument("--num", type=int, default=500, help="samples per row (default: 500)")
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 35], help="target NFEs")
    ap.add_argument("--samplers", nargs="+", default=DEFAULT_SAMPLERS, choices=sorted(SAMPLERS),
                    help=f"decoder samplers (default: {' '.join(DEFAULT_SAMPLERS)})")  # fmt: skip
    ap.add_argument("--reference-nfe", type=int, default=256, help="the reference's NFE (default: 256)")
    ap.add_argument("--reference-sampler", default="heun", choices=sorted(SAMPLERS), help="default: heun")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"],
                    help="decoder precision of every row and of the reference (default: bf16)")  # fmt: skip
    ap.add_argument("--precision-check", metavar="SAMPLER:NFE",
                    help="also sample this row in the other precision and report the difference")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    ap.add_argument("--batch-size", type=int, default=500, help="images per forward pass (default: 500)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="the goal's relative FID gap (0.05)")
    ap.add_argument("--goal-nfe", type=float, default=20, help="the goal's NFE budget (default: 20)")
    ap.add_argument("--report", default="docs/nfe/report.md", help="where the tables are written")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    try:
        check = parse_check(args.precision_check)
        run = Path(args.run)
        ev = evaluation(run, args.num)
        seeds = list(range(args.seed, args.seed + args.num))
        base = replace(ev["cfg"].sample, batch_size=args.batch_size)
        sections = []
        for stage in args.stage:
            study = Study(run, stage, seeds, base, ev)

            def log(r: Row, stage: str = stage) -> None:
                print(f"[{stage}] {r.sampler} {r.steps} steps ({r.nfe:g} NFE, {r.precision}): FID {r.fid:.2f}, "
                      f"{r.seconds:.1f} s", file=sys.stderr, flush=True)  # fmt: skip

            rs = args.reference_sampler
            ref = study.row(rs, steps_for_nfe(rs, args.reference_nfe), args.precision, reference=True)
            log(ref)
            rows = []
            for sampler in args.samplers:
                for steps in dict.fromkeys(steps_for_nfe(sampler, n) for n in args.nfe):
                    rows.append(study.row(sampler, steps, args.precision))
                    log(rows[-1])
            extra = []
            if check is not None:
                steps = steps_for_nfe(check[0], check[1])
                pa = next((r for r in rows if (r.sampler, r.steps) == (check[0], steps)), None)
                if pa is None:
                    pa = study.row(check[0], steps, args.precision)
                    extra.append(pa)
                pb = study.row(check[0], steps, "fp32" if args.precision == "bf16" else "bf16")
                extra.append(pb)
                log(pb)
                check_line = (f"Precision check ({pa.sampler} {pa.steps} steps): {pa.precision} FID {pa.fid:.2f} "
                              f"({pa.seconds:.1f} s) vs {pb.precision} FID {pb.fid:.2f} ({pb.seconds:.1f} s), "
                              f"RMS pixel difference {rms(pa.images, pb.images):.4f}.")  # fmt: skip
            text = table([ref, *rows, *extra], ref)
            hits = within(rows, ref, args.tolerance, args.goal_nfe)
            lines = [f"## {stage}: {STAGES[stage]}", "",
                     f"{args.num} samples per row, seeds {seeds[0]}..{seeds[-1]}, decoder precision "
                     f"{args.precision}. Reference: {rs} {ref.steps} steps ({ref.nfe:g} NFE), FID {ref.fid:.2f}; "
                     f"held-out real images ({args.num}, {ev['heldout']}) score {ev['floor']:.2f} (the floor)."]  # fmt: skip
            if study.given is not None:
                lines[-1] += (f" The prior's embeddings were drawn once ({base.prior_sampler}, "
                              f"{base.prior_num_steps} steps, fp32, {study.prior_seconds:.1f} s) and held fixed.")  # fmt: skip
            lines += ["", text, ""]
            if check is not None:
                lines += [check_line, ""]
            lines += [f"Within {args.tolerance:.0%} of the reference FID at <= {args.goal_nfe:g} NFE: "
                      + ("; ".join(hits) if hits else "none") + ".", ""]  # fmt: skip
            print("\n".join(lines), flush=True)
            sections += lines
    except VcdmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = time.perf_counter() - t_start
    head = [
        "# Sampler NFE study",
        "",
        f"Command: `{' '.join(shlex.quote(a) for a in ['python', 'bench/nfe_study.py', *(sys.argv[1:] if argv is None else argv)])}`",
        "",
        f"Scoring: FID on the features of the evaluation classifier `{ev['extractor'].name}` against "
        f"{ev['reference']} (as `vcdm demo`), {args.num} samples per row: FID at this count is biased upward "
        "(compare rows only among themselves). NFE is the counted number of decoder evaluations per sample. "
        "RMS to reference: root-mean-square pixel difference (images in [-1, 1]) to the reference images of "
        "the same seeds. Seconds: decoder sampling wall time per row on a shared CPU (noisy). "
        f"Wall time of the whole study: {total / 60:.1f} min.",
        "",
    ]  # fmt: skip
    report = Path(args.report)
    report.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(report, "\n".join(head + sections))
    print(f"wrote {report} ({total / 60:.1f} min)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
