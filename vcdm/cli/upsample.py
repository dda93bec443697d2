"""`vcdm upsample RUN IMAGES...`: upsample image files with the run's upsampler (the top stage of a cascade).

Imported by vcdm.cli.main after OMP_WAIT_POLICY is set.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from vcdm.cli.common import add_config_args, add_verb


def add_parser(sub: Any) -> None:
    from vcdm.cli.sample import add_upsampler_args

    p = add_verb(sub, "upsample", "upsample image files with the run's upsampler (`vcdm train upsampler`)",
                 "Each image is brought to the upsampler's input size (upsampler.low_res: shorter side resized "
                 "with antialiasing, centre crop) and upsampled to the data's size exactly as a cascade upsamples "
                 "its base samples: noised at --aug-sigma, then sampled. Image i uses seed SEED+i, so a result "
                 "depends only on its image and seed. Writes one PNG per image (named after it) and grid.png; "
                 "inputs/ holds the images as the upsampler received them (before the noise).")  # fmt: skip
    p.add_argument("run", metavar="RUN", help="run directory with a trained upsampler")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--out", help="output directory (default: RUN/samples/upsample-seedSEED)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image (default: 0)")
    p.add_argument("--label", type=int, help="class label for a label-conditioned upsampler")
    p.add_argument("--force", action="store_true", help="overwrite an output directory that holds files")
    add_upsampler_args(p, cascade=False)
    add_config_args(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from vcdm.cli.common import read_images, run_config
    from vcdm.cli.sample import upsampler_settings
    from vcdm.data import save_grid, save_images
    from vcdm.pipeline import Pipeline, lowres_shape
    from vcdm.runs import RunDir, guard_output
    from vcdm.training import distributed as dist

    cfg = run_config(args, args.run)
    s = replace(cfg.sample, **upsampler_settings(args))
    run_dir = RunDir(args.run)
    meta = run_dir.stage_meta("upsampler") or {}
    out = Path(args.out) if args.out else run_dir.samples("upsample", args.seed)
    guard_output(out, args.force, "upsampled images")
    # an embedding-conditioned upsampler is given the embeddings of the images themselves
    embedder = "embedding" in str(meta.get("condition", "none"))
    pipe = Pipeline.from_run(args.run, None, dist.device(), upsampler=True, embedder=embedder)
    shape = lowres_shape(pipe.upsampler)
    low = shape[-1]
    images = read_images(args.images, shape)
    seeds = list(range(args.seed, args.seed + len(images)))
    names = [f"{i:02d}_{Path(p).stem}.png" for i, p in enumerate(args.images)]
    t0 = time.perf_counter()
    up = pipe.upsample(images, seeds, s, args.label, progress=not args.no_progress)
    save_images(up, out, names)
    save_images(images, out / "inputs", names)
    save_grid(torch.cat([torch.nn.functional.interpolate(images, size=up.shape[-2:], mode="nearest"), up]),
              out / "grid.png", nrow=len(up))  # fmt: skip
    size = "x".join(map(str, up.shape[-2:]))
    print(f"upsampled {len(up)} images from {low}x{low} to {size} into {out} (grid.png: inputs above, results "
          f"below) in {time.perf_counter() - t0:.1f} s")  # fmt: skip
