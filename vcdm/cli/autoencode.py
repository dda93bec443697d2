"""`vcdm autoencode RUN [IMAGES...]`: reconstruct images through the run's autoencoder (`vcdm train autoencoder`)
and report their PSNR, to check the first stage of latent diffusion before training in its latent space.

Imported by vcdm.cli.main after OMP_WAIT_POLICY is set.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from vcdm.cli.common import add_config_args, add_verb, positive


def add_parser(sub: Any) -> None:
    p = add_verb(sub, "autoencode", "reconstruct images through the run's autoencoder and report their PSNR",
                 "Encode images to the posterior means of the run's autoencoder (scaled by its saved scale "
                 "factor, as a latent diffusion stage sees them) and decode them back. Without IMAGE files it "
                 "takes the first --num images of --split of the run's dataset. Writes one PNG per "
                 "reconstruction and grid.png (originals above, reconstructions below) into --out, and prints "
                 "the mean PSNR (dB, images in [-1, 1]) and the latent shape.")  # fmt: skip
    p.add_argument("run", metavar="RUN", help="run directory with a trained autoencoder")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (default: the run's dataset)")
    p.add_argument("--num", type=int, default=16, help="dataset images to reconstruct (default: 16)")
    p.add_argument("--split", help="dataset split (default: the run's data.split)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: RUN/edits/autoencode)")
    p.add_argument("--force", action="store_true", help="overwrite an output directory that holds files")
    add_config_args(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from dataclasses import replace

    import torch

    from vcdm.cli.common import read_images, run_config
    from vcdm.data import load_dataset, save_grid, save_images
    from vcdm.editing.latent import psnr
    from vcdm.runs import RunDir, guard_output
    from vcdm.stages.autoencoder import load_latent_space
    from vcdm.training import distributed as dist

    positive("--num", args.num)
    cfg = run_config(args, args.run)
    space, meta = load_latent_space(args.run, dist.device())
    net = space.cfg
    out = Path(args.out) if args.out else RunDir(args.run).edits("autoencode")
    guard_output(out, args.force, "reconstructions")
    if args.images:
        images = read_images(args.images, (net.in_channels, net.image_size, net.image_size))
        names = [f"{i:02d}_{Path(p).stem}.png" for i, p in enumerate(args.images)]
    else:
        data = load_dataset(replace(cfg.data, split=args.split or cfg.data.split))
        images = data.as_float(slice(0, args.num))
        names = [f"{i:04d}.png" for i in range(len(images))]
    t0 = time.perf_counter()
    z = space.encode(images)
    rec = space.decode(z).cpu()
    seconds = time.perf_counter() - t0
    save_images(rec, out, names)
    save_grid(torch.cat([images, rec]), out / "grid.png", nrow=len(rec))
    print(f"reconstructed {len(rec)} images through latents {tuple(z.shape[1:])} (f = {net.factor}, scale factor "
          f"{meta['scale_factor']:.4g}) in {seconds:.1f} s: PSNR {psnr(images, rec).mean():.2f} dB; {out}")  # fmt: skip
