"""`vcdm sample RUN --prompt TEXT [--prompt ...] [--prompts-file F] --num N`: text to image with a run's text
prior and decoder (unCLIP) or its text-conditioned decoder alone (GLIDE, --stage baseline).

Prompt j's samples use seeds SEED..SEED+N-1 and are written as OUT/pJJJ-SEED.png (a cascade's base images under
OUT/low_res/); grid.png has one row per prompt; prompts.txt lists the prompts in order. Every PNG records its
prompt (vcdm.pngmeta), so `vcdm sample --from-png` redraws it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from vcdm.config import SampleConfig
from vcdm.errors import VcdmError
from vcdm.fileio import atomic_write_text

LOW_RES = "low_res"


def sample_prompts(
    args: argparse.Namespace, pipe: Any, s: SampleConfig, prompts: list[str], out: Path
) -> None:
    """Sample `args.num` images of each prompt with the pipeline and write them, the grid and prompts.txt."""
    from vcdm import pngmeta
    from vcdm.data import save_grid, save_images
    from vcdm.data.images import load_pngs
    from vcdm.training import distributed as dist

    if not pipe.text_conditional:
        raise VcdmError(f"--prompt: {args.stage} of {args.run} is not conditioned on text (train the prior with "
                        "prior.condition=text, or the decoder with decoder.condition embedding+text or text)")  # fmt: skip
    if not prompts:
        raise VcdmError(
            f"{args.stage} of {args.run} is conditioned on text: give --prompt TEXT or --prompts-file FILE"
        )
    if args.label is not None:
        raise VcdmError("--label does not apply to text-conditioned sampling (give --prompt)")
    seeds = list(range(args.seed, args.seed + args.num))
    items = [(j, p, seed) for j, p in enumerate(prompts) for seed in seeds]
    mine = items[dist.rank() :: dist.world_size()]
    t0 = time.perf_counter()
    # checks every prompt (empty, too long) before anything is sampled
    res = pipe(
        [seed for _, _, seed in mine], s, prompts=[p for _, p, _ in mine], progress=not args.no_progress
    )
    names = [f"p{j:03d}-{seed:06d}.png" for j, _, seed in items]
    cascade = pipe.upsampler is not None
    candidates = s.prior_candidates if "prior" in pipe.components and s.prior_candidates > 1 else None

    def meta(seed: int, prompt: str | None, **extra: Any) -> dict[str, Any]:
        return pngmeta.params(args.run, args.stage, seed, s, cascade=cascade, prompt=prompt,
                              prior_candidates=candidates, **extra)  # fmt: skip

    mine_names = names[dist.rank() :: dist.world_size()]
    parts = [(res.images, out)] + ([(res.low_res, out / LOW_RES)] if res.low_res is not None else [])
    for images, folder in parts:
        extra = {"part": LOW_RES} if folder != out else {}
        for path, (_, p, seed) in zip(save_images(images, folder, mine_names), mine):
            pngmeta.write(path, meta(seed, p, **extra))
    dist.barrier()
    if dist.rank() != 0:
        return
    atomic_write_text(out / "prompts.txt", "".join(f"p{j:03d}\t{p}\n" for j, p in enumerate(prompts)))
    for _, folder in parts:
        extra = {"part": LOW_RES} if folder != out else {}
        save_grid(load_pngs([folder / n for n in names]), folder / "grid.png", nrow=args.num)
        pngmeta.write(folder / "grid.png", meta(args.seed, prompts[0] if len(prompts) == 1 else None,
                                                num=args.num, **extra))  # fmt: skip
    size = "x".join(map(str, pipe.output_shape[1:]))
    print(
        f"wrote {args.num} {size} samples of each of {len(prompts)} prompt(s), grid.png (a row per prompt) and "
        f"prompts.txt to {out} in {time.perf_counter() - t0:.1f} s"
    )
