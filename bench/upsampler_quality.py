"""Upsampler quality: the run's SR3 upsampler alone on held-out emoji, against bicubic (and nearest) upsampling.

Run as `.venv/bin/python bench/upsampler_quality.py --run runs/emoji [--num 420] [--levels 0 0.05 0.2]
[--steps 12] [--precision bf16] [--seed 0]`.

It trains nothing but the evaluation classifier (once, cached; see below). Rows:

- from the true low-res images (the held-out 64x64 images of --source's test split, resized with antialiasing
  to the upsampler's low_res exactly as the run's base stage and upsampler train on them,
  `ImageData.images_at`): nearest and bicubic interpolation (torch, align_corners=False, clamped), and the
  upsampler at each augmentation level of --levels (SampleConfig.upsampler_aug_sigma; the run's own level is
  its upsampler.augment.sample_sigma). Scored by PSNR and SSIM against the true 64x64 images and by FID of the
  upsampled set against the true 64x64 set.
- from the run's own base samples (prior -> decoder at low_res, the run's sample settings, one per seed): the
  upsampler at each level and bicubic of the same base samples, FID only (there is no ground truth).
- with --probes, the true 64x64 images themselves with Gaussian noise of 1, 2 and 4 grey levels and with a
  0.5-pixel Gaussian blur: how each metric weighs grain against blur (on emoji, Inception FID punishes a grain
  of 2 grey levels more than the blur; README).
- the FID floor: as many real training images of --source against the same held-out set.

Every row's output is quantised to uint8 (as if written as PNG) before it is scored. PSNR: 10 log10(1 / MSE)
per image on [0, 1], averaged over images. SSIM: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5),
C1 = 0.01^2, C2 = 0.03^2 on [0, 1], "valid" filtering, per channel, averaged over pixels, channels and images.
FID: the Frechet distance on the penultimate features of the evaluation classifier (`vcdm.eval.scoring.
get_classifier` with the default EvalConfig, trained once on --source's training split at 64x64 and cached in
the user cache dir): an emoji-category classifier, not Inception, so the values are comparable only among
themselves, and only at equal image counts (--num). Seconds: the upsampling alone (not scoring).

Seeds are --seed .. --seed + num - 1, one per held-out image (and per base sample): a row's starting, fresh
and augmentation noise depend only on the seed (vcdm.seeding), so the levels differ only by sigma_aug.
It prints a markdown table and writes it, with the command line, to --report (default docs/upsampler/report.md).
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
import torch.nn.functional as F  # noqa: E402

from vcdm.errors import VcdmError  # noqa: E402
from vcdm.fileio import atomic_write_text  # noqa: E402

DEFAULT_LEVELS = [0.0, 0.05, 0.2]
PROBE_NOISE = (1.0, 2.0, 4.0)  # --probes: noise std in grey levels of 255
PROBE_BLUR = 0.5  # --probes: blur std in pixels


# ---- metrics ----


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> the same images through uint8 (as saved), as float in [0, 1]."""
    from vcdm.data import to_uint8

    return to_uint8(images).double() / 255.0


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1] (N, C, H, W): 10 log10(1 / MSE); (N,)."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(1 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM of images in [0, 1] (N, C, H, W): Gaussian window, per channel, "valid" filtering, mean
    over the map and the channels; (N,)."""
    c1, c2 = 0.01**2, 0.03**2
    x, y = x.double(), y.double()
    ch = x.shape[1]
    w = gaussian_window(size, sigma).to(x)[None, None].repeat(ch, 1, 1, 1)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=ch)

    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def interpolate(x_lr: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Low-res images in [-1, 1] -> size x size by `mode` ("nearest" | "bicubic", align_corners=False), clamped."""
    if mode == "nearest":
        return F.interpolate(x_lr.float(), size=(size, size), mode="nearest")
    return F.interpolate(x_lr.float(), size=(size, size), mode=mode, align_corners=False).clamp(-1, 1)


# ---- the benchmark ----


@dataclass
class Row:
    method: str
    inputs: str  # "true low-res" | "base samples" | "real"
    level: float | None
    seconds: float | None
    psnr: float | None = None
    ssim: float | None = None
    fid: float | None = None
    fid_inception: float | None = None  # with --inception


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[Row]) -> str:
    """The markdown table; the Inception FID column only where some row has one (--inception)."""
    inc = any(r.fid_inception is not None for r in rows)
    lines = [
        "| method | input | aug level | PSNR (dB) | SSIM | FID |"
        + (" FID (Inception) |" if inc else "")
        + " seconds |",
        "| --- | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if inc else "") + " ---: |",
    ]
    for r in rows:
        extra = f" {fmt(r.fid_inception, '.2f')} |" if inc else ""
        lines.append(f"| {r.method} | {r.inputs} | {fmt(r.level, 'g')} | {fmt(r.psnr, '.2f')} | "
                     f"{fmt(r.ssim, '.4f')} | {fmt(r.fid, '.2f')} |{extra} {fmt(r.seconds, '.1f')} |")  # fmt: skip
    return "\n".join(lines)


def spread_indices(n_total: int, num: int) -> torch.Tensor:
    """`num` indices spread evenly over range(n_total) (the held-out set is ordered by category)."""
    return torch.linspace(0, n_total - 1, num).round().long().unique()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from vcdm.config import EvalConfig
        from vcdm.data import DataConfig, load_dataset
        from vcdm.eval.scoring import classifier_accuracy, get_classifier
        from vcdm.pipeline import Pipeline
        from vcdm.runs import RunDir

        self.args = args
        run = RunDir(args.run)
        self.cfg = run.load_config()
        if run.stage_meta("upsampler") is None:
            raise VcdmError(f"{args.run}: no upsampler export (vcdm train upsampler {args.run})")
        up_meta = run.stage_meta("upsampler")
        self.embedding_cond = "embedding" in up_meta.get("condition", "none")
        self.pipe = Pipeline.from_run(args.run, embedder=self.embedding_cond)
        top = self.pipe.upsampler
        if top is None:
            raise VcdmError(f"{args.run}: the pipeline has no upsampler on top of its decoder")
        # out_shape: the upsampled image's (C, H, W), also for an upsampler in latent space (its `shape` is the latent's)
        self.low, self.size = int(top.meta["low_res"]), top.out_shape[-1]
        self.default_level = float(top.meta["augment"]["sample_sigma"]) if top.meta["net"].get(
            "aug_embedding") else 0.0  # fmt: skip

        data = DataConfig(source=args.source, split="test", image_size=self.size, channels=top.out_shape[0])
        heldout = load_dataset(data)
        num = len(heldout) if args.num is None else min(args.num, len(heldout))
        if num < 2:
            raise VcdmError(f"--num must be at least 2, got {num}")
        self.heldout = heldout.subset(spread_indices(len(heldout), num))
        self.n = len(self.heldout)
        self.seeds = list(range(args.seed, args.seed + self.n))
        self.hr = self.heldout.as_float()
        self.lr = self.heldout.images_at(self.low).float() / 127.5 - 1
        self.hr01 = quantize(self.hr)
        self.labels = self.heldout.labels if self.pipe.class_conditional else None

        self.train = load_dataset(replace(data, split="train"))
        self.extractor = self.ref = None
        if not args.no_fid:
            print("evaluation classifier (trained once on the training split, ~5 min on 2 CPU cores; cached)",
                  flush=True)  # fmt: skip
            self.extractor, self.classifier_path = get_classifier(self.train, EvalConfig(), progress=False)
            self.ref = self.extractor.features(self.hr)
            self.accuracy = classifier_accuracy(self.extractor, self.heldout)
        self.inception = self.ref_inception = None
        if args.inception:  # the FID Inception-v3 from a local weights file (see `vcdm fid --inception`)
            from vcdm.eval import load_extractor

            self.inception = load_extractor("inception", args.inception)
            self.ref_inception = self.inception.features(self.hr)

        s = self.cfg.sample
        self.sample_cfg = replace(
            s, precision=args.precision or s.precision, batch_size=args.batch_size,
            upsampler_num_steps=args.steps or s.upsampler_num_steps,
            upsampler_sampler=args.sampler or s.upsampler_sampler,
        )  # fmt: skip

    def fid(self, images: torch.Tensor, inception: bool = False) -> float | None:
        """FID of `images` (quantised to uint8 first) on the classifier's features, or with `inception` on the
        Inception-v3's; None when that extractor is not in use."""
        from vcdm.eval.fid import fid_from_features

        extractor, ref = (self.inception, self.ref_inception) if inception else (self.extractor, self.ref)
        if extractor is None:
            return None
        x = quantize(images).float() * 2 - 1
        return fid_from_features(extractor.features(x), ref)

    def scored(self, r: Row, images: torch.Tensor, truth: bool) -> Row:
        if truth:
            x = quantize(images)
            r.psnr = float(psnr(x, self.hr01).mean())
            r.ssim = float(ssim(x, self.hr01).mean())
        r.fid, r.fid_inception = self.fid(images), self.fid(images, inception=True)
        print(f"  {r.method} [{r.inputs}, level {fmt(r.level, 'g')}]: PSNR {fmt(r.psnr, '.2f')} SSIM "
              f"{fmt(r.ssim, '.4f')} FID {fmt(r.fid, '.2f')} FID (Inception) {fmt(r.fid_inception, '.2f')} "
              f"({fmt(r.seconds, '.1f')} s)", flush=True)  # fmt: skip
        return r

    def upsample(
        self, x_lr: torch.Tensor, level: float, embeddings: torch.Tensor | None
    ) -> tuple[torch.Tensor, float]:
        cfg = replace(self.sample_cfg, upsampler_aug_sigma=level)
        t0 = time.perf_counter()
        out = self.pipe.upsample(x_lr, self.seeds, cfg, self.labels, embeddings=embeddings)
        return out, time.perf_counter() - t0

    def probe_rows(self) -> list[Row]:
        """How the metrics score small known changes to the true high-res images (--probes): Gaussian noise of
        PROBE_NOISE grey levels (std, of 255) and a Gaussian blur of PROBE_BLUR pixels, each a fixed draw."""
        from vcdm.stages.upsampler import random_blur

        rows, hr = [], self.hr.float()
        g = torch.Generator().manual_seed(self.args.seed)
        for grey in PROBE_NOISE:
            noisy = hr + torch.randn(hr.shape, generator=g) * (2 * grey / 255)
            rows.append(
                self.scored(Row(f"true + noise {grey:g}/255", "true high-res", None, None), noisy, True)
            )
        blurred = random_blur(hr, 1.0, (PROBE_BLUR, PROBE_BLUR), g)
        rows.append(
            self.scored(Row(f"true, blurred {PROBE_BLUR:g} px", "true high-res", None, None), blurred, True)
        )
        return rows

    def rows(self) -> list[Row]:
        rows: list[Row] = []
        lr = self.lr
        print(f"true low-res ({self.n} held-out images, {self.low} -> {self.size}):", flush=True)
        for mode in ("nearest", "bicubic"):
            t0 = time.perf_counter()
            out = interpolate(lr, self.size, mode)
            rows.append(self.scored(Row(mode, "true low-res", None, time.perf_counter() - t0), out, True))
        if self.args.probes:
            rows += self.probe_rows()
        emb = None
        if self.embedding_cond:  # the run's embedder on the true low-res images (as `vcdm upsample` does)
            emb = self.pipe.embed_images(lr)
        for level in self.args.levels:
            out, sec = self.upsample(lr, level, emb)
            rows.append(self.scored(Row("upsampler", "true low-res", level, sec), out, True))

        if not self.args.no_base:
            print(f"base samples ({self.n} seeds, the run's prior / decoder settings):", flush=True)
            t0 = time.perf_counter()
            out = self.pipe.sample(self.seeds, self.sample_cfg, self.labels, until="decoder")
            self.base_seconds = time.perf_counter() - t0
            base = out["decoder"].clamp(-1, 1)
            emb = self.pipe.stats.denormalize(out["prior"]) if self.embedding_cond else None
            t0 = time.perf_counter()
            bic = interpolate(base, self.size, "bicubic")
            rows.append(
                self.scored(Row("bicubic", "base samples", None, time.perf_counter() - t0), bic, False)
            )
            for level in self.args.levels:
                up, sec = self.upsample(base, level, emb)
                rows.append(self.scored(Row("upsampler", "base samples", level, sec), up, False))

        if self.extractor is not None or self.inception is not None:
            idx = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(self.args.seed))[
                : self.n
            ]
            real = self.train.as_float(idx)
            rows.append(
                self.scored(Row(f"real images ({self.train.source}, floor)", "real", None, None), real, False)
            )
        return rows


def report(b: Bench, rows: list[Row], command: str, wall: float) -> str:
    a, c = b.args, b.sample_cfg
    fid_line = (
        f"FID: Frechet distance on the {b.extractor.dim}-d penultimate features of the evaluation classifier "
        f"`{b.extractor.name}` (vcdm.eval.scoring.get_classifier, default EvalConfig, trained on "
        f"{b.train.source} at {b.size}x{b.size}, category accuracy {b.accuracy:.3f} on these held-out images; cached "
        f"at `{b.classifier_path}`), each set of {b.n} images against the {b.n} true {b.size}x{b.size} held-out "
        "images. These are emoji-category classifier features, not Inception: compare the values only among "
        "themselves, at equal image counts. The rows on the true low-res images are paired (the upsampled set "
        "holds the very images of the reference), hence far below the floor; the rows on base samples and the "
        "floor row are unpaired (different images): compare those with each other."
        if b.extractor is not None
        else "FID: not computed (--no-fid)."
    )
    if b.inception is not None:
        fid_line += (
            f" FID (Inception): the same sets on the 2048-d pool3 features of {b.inception.name} (`--inception "
            f"{a.inception}`; images resized to 299x299 as that network's form does), against the same "
            f"{b.n} true held-out images. At {b.n} images Inception FID carries a large small-sample bias: compare "
            "rows with each other, not with published FIDs."
        )
    base_line = "" if a.no_base else (
        f"Base samples: the run's two-stage samples at {b.low}x{b.low} (prior {c.prior_sampler} {c.prior_num_steps} "
        f"steps, decoder {c.sampler} {c.num_steps} steps, guidance {c.guidance:g}; {b.base_seconds:.1f} s), one "
        "per seed; scored by FID only (there is no ground truth).\n\n"
    )  # fmt: skip
    return (
        "# Upsampler quality on held-out emoji\n\n"
        f"Run: `{a.run}` (upsampler {b.low} -> {b.size}; its default augmentation level "
        f"{b.default_level:g}). Held-out set: {b.heldout.source}, {b.n} images (spread evenly over the split), "
        f"low-res inputs = the same images resized with antialiasing to {b.low}x{b.low} (`ImageData.images_at`). "
        f"Upsampler: {c.upsampler_sampler}, {c.upsampler_num_steps} steps, {c.precision}; seeds {a.seed}.."
        f"{a.seed + b.n - 1}.\n\n"
        f"Command (wall time {wall / 60:.1f} min):\n\n```\n{command}\n```\n\n"
        f"{table(rows)}\n\n"
        "PSNR and SSIM against the true 64x64 images, after uint8 quantisation, on [0, 1]: PSNR = 10 log10(1 / MSE) "
        "per image, averaged; SSIM with an 11x11 Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2, valid "
        "filtering, per channel, averaged. nearest / bicubic: torch F.interpolate (bicubic with "
        "align_corners=False, clamped to [-1, 1]: the upsampler's own conditioning input at level 0).\n\n"
        f"{fid_line} The floor row scores {b.n} real training images against the same held-out set.\n\n"
        f"{base_line}"
        + (
            "Probe rows (--probes): the true 64x64 images themselves with Gaussian noise of the stated std in grey "
            f"levels of 255, or a Gaussian blur of std {PROBE_BLUR:g} px (seed {a.seed}): how each metric weighs a "
            "fine grain against blur.\n\n"
            if a.probes
            else ""
        )
        + "Seconds: the upsampling of the row alone (not scoring), on this machine: only indicative.\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a run directory with an upsampler export (read only)")
    ap.add_argument("--source", default="emoji:google", help="held-out data: SOURCE's test split (default: "
                    "emoji:google); the classifier and the floor use its training split")  # fmt: skip
    ap.add_argument(
        "--num", type=int, default=None, help="held-out images (default: all, 420 for emoji:google)"
    )
    ap.add_argument("--levels", type=float, nargs="+", default=DEFAULT_LEVELS,
                    help="upsampler augmentation levels sigma_aug (default: 0 0.05 0.2)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=None, help="upsampler steps (default: the run's)")
    ap.add_argument("--sampler", default=None, help="upsampler sampler (default: the run's)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: the run's")
    ap.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    ap.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default: 128)")
    ap.add_argument("--no-base", action="store_true", help="skip the rows on the run's base samples")
    ap.add_argument("--probes", action="store_true", help="add rows scoring the true high-res images with small "
                    f"Gaussian noise ({', '.join(f'{g:g}' for g in PROBE_NOISE)} grey levels) and a {PROBE_BLUR:g}-px "
                    "blur: how each metric reacts to grain against blur")  # fmt: skip
    ap.add_argument("--no-fid", action="store_true", help="skip FID (and the classifier)")
    ap.add_argument("--inception", metavar="FILE", help="also FID on the FID Inception-v3's features, from these "
                    "local weights (as `vcdm fid --inception`; nothing is downloaded)")  # fmt: skip
    ap.add_argument("--report", default="docs/upsampler/report.md", help="where the table is written")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    try:
        bench = Bench(args)
        rows = bench.rows()
    except VcdmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t_start
    command = shlex.join(
        [".venv/bin/python", "bench/upsampler_quality.py", *(argv if argv is not None else sys.argv[1:])]
    )
    niceness = os.nice(0)
    command = (f"nice -n {niceness} " if niceness else "") + command
    print()
    print(table(rows))
    print(f"\nwall time {wall / 60:.1f} min")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.report, report(bench, rows, command, wall))
        print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
