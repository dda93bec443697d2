"""CLIP retrieval on emoji: text tower (a) "scratch" against (b) the frozen "minilm", at equal images seen.

Run as `.venv/bin/python bench/clip_retrieval.py [--nimg 120000] [--out /tmp/clip_bench] [--seed 0]
[--report docs/clip/report.md]`.

Each tower trains the `clip` kind (vcdm.stages.clip) on the emoji training split at 32x32 with the ClipStage
defaults but for --nimg, into OUT/<tower>/clip (a finished run is reused). `clip.heldout_fraction` (10%) of the
distinct captions, chosen by a hash of the caption, are never trained on (the scratch tokenizer never sees them
either). Retrieval is scored, image -> text and text -> image, recall@1 and @5 (`vcdm.text.recall_at_k`), on:

- held-out: the training split's images whose caption is held out, against the held-out captions;
- seen: as many trained-on captions (drawn with --seed) and their images, the same number of candidates;
- test names: the emoji test split (names the dataset itself holds out, `vcdm.data.emoji`), never trained on.

Chance is k / (number of captions) for image -> text. It prints a markdown table and writes it, with the
command, to --report.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep rather than spin (set before torch loads): see bench/unet_speed.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from vcdm.errors import exit_status  # noqa: E402
from vcdm.fileio import atomic_write_text  # noqa: E402

TOWERS = ("scratch", "minilm")
COLUMNS = ("image_to_text@1", "image_to_text@5", "text_to_image@1", "text_to_image@5")


def train_tower(tower: str, out: Path, nimg: int, seed: int, progress: bool) -> dict:
    """Train (or reuse) the clip kind with text tower `tower`; its export meta."""
    from vcdm.config import RunConfig, apply_overrides
    from vcdm.data import load_dataset
    from vcdm.runs import RunDir, read_meta
    from vcdm.stages import train_stage

    cfg = apply_overrides(RunConfig(), ["data.source=emoji", f"clip.text.kind={tower}",
                                        f"clip.train.total_nimg={nimg}", f"clip.train.seed={seed}"])  # fmt: skip
    run = RunDir(out / tower)
    meta = read_meta(run.stage("clip"))
    if meta is None or int(meta.get("nimg", 0)) < nimg:
        train_stage("clip", run.path, cfg, load_dataset(cfg.data), progress=progress)
        meta = read_meta(run.stage("clip"))
    return meta


def eval_sets(seed: int) -> dict[str, tuple[torch.Tensor, list[str]]]:
    """{set name: (uint8 images, captions)}: held-out, seen (as many captions as held out), test names."""
    from vcdm.config import ClipStage
    from vcdm.data import load_dataset
    from vcdm.data.dataset import DataConfig
    from vcdm.stages.clip import clip_split

    train = load_dataset(DataConfig(source="emoji"))
    seen, held = clip_split(train.captions, ClipStage().heldout_fraction)
    pick = torch.randperm(len(seen), generator=torch.Generator().manual_seed(seed))[: len(held)].tolist()
    seen = {seen[i] for i in pick}

    def select(data, keep: set[str]) -> tuple[torch.Tensor, list[str]]:
        rows = [i for i, c in enumerate(data.captions) if c in keep]
        return data.images[rows], [data.captions[i] for i in rows]

    test = load_dataset(DataConfig(source="emoji", split="test"))
    return {"held-out": select(train, set(held)), "seen": select(train, seen),
            "test names": (test.images, test.captions)}  # fmt: skip


def report(rows: list[dict], metas: dict[str, dict], command: str, nimg: int) -> str:
    head = "| tower | set | captions | images | chance i->t @1 | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (5 + len(COLUMNS))]
    for r in rows:
        cells = [r["tower"], r["set"], str(r["texts"]), str(r["images"]), f"{1 / r['texts']:.3f}"]
        lines.append("| " + " | ".join(cells + [f"{r[c]:.3f}" for c in COLUMNS]) + " |")
    speed = [f"- {t}: {m['nimg']} images seen in {m['seconds']:.0f} s ({m['nimg'] / m['seconds']:.0f} img/s), "
             f"{m['captions']['train']} training captions" for t, m in metas.items()]  # fmt: skip
    return "\n".join(["# CLIP retrieval on emoji: text tower (a) scratch vs (b) frozen MiniLM", "",
                      f"Command: `{command}`", "", f"Equal budget: {nimg} images seen per tower (batch 256, "
                      "32x32 images, the ClipStage defaults otherwise).", "", *speed, "", *lines, ""])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nimg", type=int, default=120_000, help="images seen per tower")
    ap.add_argument("--out", default="/tmp/clip_bench", help="run directories (OUT/scratch, OUT/minilm)")
    ap.add_argument("--towers", nargs="+", default=list(TOWERS), choices=TOWERS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", default="docs/clip/report.md")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    def run() -> None:
        from vcdm.stages.clip import evaluate_retrieval, load_clip

        t0 = time.perf_counter()
        metas = {
            t: train_tower(t, Path(args.out), args.nimg, args.seed, not args.no_progress) for t in args.towers
        }
        sets = eval_sets(args.seed)
        rows = []
        for tower in args.towers:
            clip = load_clip(Path(args.out) / tower / "clip")
            for name, (images, captions) in sets.items():
                rows.append({"tower": tower, "set": name, **evaluate_retrieval(clip, images, captions)})
        text = report(rows, metas, shlex.join(["python", *sys.argv]), args.nimg)
        text += f"\nWall clock of the whole script: {time.perf_counter() - t0:.0f} s.\n"
        print(text)
        atomic_write_text(Path(args.report), text)

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
