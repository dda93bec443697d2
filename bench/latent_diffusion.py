"""Latent diffusion on emoji at 64x64: the autoencoder at f = 4 and f = 8, and latent against pixel diffusion.

Run as `.venv/bin/python bench/latent_diffusion.py [--out /tmp/vcdm_latent] [--ae-seconds 150]
[--seconds 150] [--num 200] [--report docs/latent/report.md]`.

In one run, on --source's training split at 64x64 (held-out: its test split):

1. autoencoders (vcdm.stages.autoencoder) at f = 4 and f = 8, each trained for --ae-seconds of wall clock (no
   discriminator at this budget); reconstruction PSNR on the held-out set (posterior mean, uint8-quantised,
   10 log10(1 / MSE) on [0, 1]) and rFID: FID of the reconstructions against the held-out images themselves.
2. the single-stage baseline (the same U-Net config) in pixel space at 64x64 and in the f = 4 latent space
   (16x16), each trained for --seconds of wall clock: training images/s, sampling images/s (decoding
   included), FID of --num samples against the held-out set; then the pixel arm trained on (resumed) for the
   autoencoder's --ae-seconds as well, so that it has the latent arm's whole wall clock, autoencoder included;
3. two-stage in latent and in pixel space: the emoji preset's y (a CLIP trained on the captions; its image
   embeddings) and prior (each capped at --aux-seconds), trained once and shared by both arms, and a two-stage
   decoder (the baseline's U-Net) trained for --seconds in each space, sampled with --guidance on y.

FID is the Frechet distance on the evaluation classifier's penultimate features (`get_classifier` with the
default EvalConfig, trained once on the training split and cached): comparable only within this table and only
at equal counts. Samplers: dpmpp_2m, --steps steps, fp32. Training is sequential, so the load of other
processes on the machine affects the arms unequally; the table records the load average.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from vcdm.config import DataConfig, DecoderStage, RunConfig, SampleConfig, apply_overrides, preset  # noqa: E402
from vcdm.errors import exit_status  # noqa: E402
from vcdm.fileio import atomic_write_text  # noqa: E402
from vcdm.networks.unet import UNetConfig  # noqa: E402
from vcdm.training.loop import TrainConfig  # noqa: E402

UNET = UNetConfig(base_channels=32, channel_mults=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(8,))
BIG = 10**9  # total_nimg: the wall clock (max_seconds) ends every training here


def _train(seconds: float, batch: int, lr: float = 2e-3) -> TrainConfig:
    return TrainConfig(batch_size=batch, total_nimg=BIG, max_seconds=seconds, lr=lr, warmup_nimg=2_000,
                       ema_halflife_nimg=5_000, ema_rampup=0.1, precision="fp32", checkpoint_every_nimg=BIG,
                       log_every_nimg=5_000)  # fmt: skip


def _quantize(x: torch.Tensor) -> torch.Tensor:
    from vcdm.data import to_uint8

    return to_uint8(x).double() / 255.0


def _samples(run: Path, stage: str, n: int, cfg: SampleConfig) -> tuple[torch.Tensor, float]:
    from vcdm.pipeline import Pipeline

    pipe = Pipeline.from_run(run, stage)
    t0 = time.perf_counter()
    images = pipe(list(range(n)), cfg).images
    return images, n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/vcdm_latent", help="work directory (run directories)")
    ap.add_argument("--source", default="emoji")
    ap.add_argument("--ae-seconds", type=float, default=150)
    ap.add_argument("--seconds", type=float, default=150, help="wall clock of each diffusion arm")
    ap.add_argument(
        "--aux-seconds", type=float, default=150, help="cap on the two-stage arms' CLIP and prior"
    )
    ap.add_argument("--guidance", type=float, default=1.5, help="the two-stage decoders' guidance on y")
    ap.add_argument("--num", type=int, default=200, help="samples (and held-out images) per FID")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--report", default="docs/latent/report.md")
    return exit_status(run, ap.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    from vcdm.data import load_dataset
    from vcdm.eval.fid import fid_from_features
    from vcdm.eval.scoring import get_classifier
    from vcdm.stages import compute_embeddings, train_stage
    from vcdm.stages.autoencoder import load_latent_space

    t_start = time.perf_counter()
    out = Path(args.out)
    data_cfg = DataConfig(source=args.source, image_size=64, channels=3)
    data = load_dataset(data_cfg)
    held = load_dataset(replace(data_cfg, split="test"))
    idx = torch.linspace(0, len(held) - 1, min(args.num, len(held))).long()
    held_x = held.as_float(idx)
    n = len(held_x)
    base = RunConfig(data=data_cfg)
    extractor, _ = get_classifier(data, base.eval, progress=False)
    held_feats = extractor.features(held_x)
    print(
        f"data: {len(data)} training images, {n} held-out; classifier ready ({time.perf_counter() - t_start:.0f} s)"
    )

    def fid(images: torch.Tensor) -> float:
        return fid_from_features(extractor.features(images), held_feats)

    rows_ae, rows = [], []
    for f in (4, 8):  # ---- 1. the autoencoders
        run_dir = out / f"f{f}"
        cfg = apply_overrides(base, [f"autoencoder.net.factor={f}", "autoencoder.disc_weight=0"])
        cfg = replace(cfg, autoencoder=replace(cfg.autoencoder, train=_train(args.ae_seconds, 32, 1e-3)))
        res = train_stage("autoencoder", run_dir, cfg, data, progress=False)
        space, meta = load_latent_space(run_dir)
        rec = space.decode(space.encode(held_x))
        mse = (_quantize(rec) - _quantize(held_x)).pow(2).flatten(1).mean(1).clamp_min(1e-12)
        psnr = float((10 * torch.log10(1 / mse)).mean())
        rows_ae.append((f, tuple(space.latent_shape((3, 64, 64))), meta["scale_factor"], res.nimg,
                        res.images_per_second, psnr, fid(rec)))  # fmt: skip
        print("autoencoder", rows_ae[-1], flush=True)

    # ---- 2. the single-stage baseline in pixel and latent space (f = 4), equal wall clock; the pixel arm is
    # then trained on for the f = 4 autoencoder's time too (resumed: the same run, scored twice)
    sample = SampleConfig(sampler="dpmpp_2m", num_steps=args.steps, batch_size=100)
    latent_run, pixel_run = out / "f4", out / "pixel"
    arms = [("single-stage, pixel", pixel_run, "pixel", 0.5, args.seconds),
            ("single-stage, latent f=4", latent_run, "latent", 1.0, args.seconds),
            ("single-stage, pixel, + the autoencoder's time", pixel_run, "pixel", 0.5, args.seconds + args.ae_seconds)]  # fmt: skip
    for name, run_dir, space_name, sigma_data, seconds in arms:
        cfg = apply_overrides(
            base, ["autoencoder.net.factor=4", f"baseline.diffusion.sigma_data={sigma_data}"]
        )
        cfg = replace(cfg, baseline=DecoderStage(net=UNET, diffusion=cfg.baseline.diffusion, train=_train(seconds, 64),
                                                 condition="none", space=space_name))  # fmt: skip
        res = train_stage("baseline", run_dir, cfg, data, progress=False)
        images, ips = _samples(run_dir, "baseline", n, sample)
        rows.append((name, res.nimg, res.images_per_second, ips, fid(images)))
        print(rows[-1], flush=True)

    # ---- 3. two-stage, in latent and in pixel space: the emoji preset's y (a CLIP trained on the captions,
    # its image embeddings) and prior, trained once in the latent run and copied to the pixel run, so both
    # decoders see the same y; the decoders as the baseline (same U-Net, same wall clock), sampled with guidance
    emoji = preset("emoji")

    def capped(train: TrainConfig) -> TrainConfig:
        return replace(train, max_seconds=args.aux_seconds, checkpoint_every_nimg=BIG)

    for name, run_dir, space_name, sigma_data in (("two-stage, latent f=4", latent_run, "latent", 1.0),
                                                  ("two-stage, pixel", pixel_run, "pixel", 0.5)):  # fmt: skip
        cfg = replace(base, clip=replace(emoji.clip, train=capped(emoji.clip.train)), embedder=emoji.embedder,
                      prior=replace(emoji.prior, train=capped(emoji.prior.train)),
                      autoencoder=replace(base.autoencoder, net=replace(base.autoencoder.net, factor=4)),
                      decoder=DecoderStage(net=UNET, diffusion=replace(base.decoder.diffusion, sigma_data=sigma_data),
                                           train=_train(args.seconds, 64), space=space_name))  # fmt: skip
        if run_dir == latent_run:
            aux = {}
            for stage in ("clip", "prior"):
                if stage == "prior":
                    compute_embeddings(run_dir, cfg, data, progress=False)
                r = train_stage(stage, run_dir, cfg, data, progress=False)
                aux[stage] = (r.nimg, r.seconds)
            aux_text = "; ".join(f"{k} {v[0]:,} images in {v[1]:.0f} s" for k, v in aux.items())
            print("auxiliary stages:", aux_text, flush=True)
        else:
            for item in ("clip", "embeddings.safetensors", "prior"):
                src, dst = latent_run / item, run_dir / item
                if not dst.exists():
                    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
        res = train_stage("decoder", run_dir, cfg, data, progress=False)
        images, ips = _samples(run_dir, "decoder", n, replace(sample, guidance=args.guidance))
        rows.append((name, res.nimg, res.images_per_second, ips, fid(images)))
        print(rows[-1], flush=True)
    rows.append((f"{n} training images (the floor)", None, None, None,
                 fid(data.as_float(torch.linspace(0, len(data) - 1, n).long()))))  # fmt: skip

    minutes = (time.perf_counter() - t_start) / 60
    lines = [
        "# Latent diffusion on emoji at 64x64", "",
        f"Data: {args.source} train split at 64x64 ({len(data)} images); held-out: {n} images of its test split. "
        f"Wall time {minutes:.1f} min on this 2-core CPU, load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (about 2 means the bench ran alone).", "",
        "Command:", "", "```", " ".join(["python", *map(shlex.quote, sys.argv)]), "```", "",
        f"## Autoencoders ({args.ae_seconds:.0f} s of training each, L1 + KL 1e-6, no discriminator)", "",
        "| f | latent | scale factor | images trained | train img/s | PSNR (dB) | rFID |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {f} | {'x'.join(map(str, s))} | {sc:.4f} | {nimg:,} | {ips:.0f} | {p:.2f} | {r:.2f} |"
          for f, s, sc, nimg, ips, p, r in rows_ae), "",
        f"## Diffusion at equal wall clock ({args.seconds:.0f} s of training each, the pixel arm also "
        f"{args.seconds + args.ae_seconds:.0f} s; U-Net {UNET.base_channels} channels, mults {UNET.channel_mults}; "
        f"{args.steps} dpmpp_2m steps, two-stage with guidance {args.guidance:g} on y; FID of {n} samples)", "",
        "The two-stage arms share y (the embeddings of a CLIP trained on the emoji names, as in the emoji preset) and "
        f"the prior over it: {aux_text}.", "",
        "| model | images trained | train img/s | sample img/s | FID |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {name} | {'-' if nimg is None else f'{nimg:,}'} | {'-' if t is None else f'{t:.1f}'} | "
          f"{'-' if s is None else f'{s:.1f}'} | {f:.2f} |" for name, nimg, t, s, f in rows),
    ]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.report:
        atomic_write_text(Path(args.report), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
