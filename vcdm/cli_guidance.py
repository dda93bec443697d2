"""CLI glue for guidance: `vcdm train noisy-classifier RUN` and the guidance flags of `vcdm sample`.

cli.py calls `train_stage` for the "noisy-classifier" stage, adds the sampling flags with
`add_guidance_args`, and hands `guidance_wrappers(args, cfg)` to the Pipeline as its decoder wrapper (applied
after classifier-free guidance). Nothing here parses beyond argparse or prints.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vcdm.config import RunConfig, load_config
from vcdm.data import load_dataset
from vcdm.data.images import conform_image, to_l_or_rgb
from vcdm.embedders import LearnedEmbedder
from vcdm.errors import VcdmError
from vcdm.guidance import (
    classifier_guidance,
    clip_guidance,
    clip_target,
    compose,
    dynamic_threshold,
    image_embed_fn,
    load_noisy_classifier,
    static_threshold,
    train_noisy_classifier,
)
from vcdm.guidance.classifier import STAGE_DIR, noisy_classifier_sigma_data
from vcdm.guidance.clip import THROUGH
from vcdm.guidance.compose import Wrapper
from vcdm.runs import stage_done
from vcdm.stages import load_embedder

THRESHOLDS = ("none", "static", "dynamic")
DEFAULT_PERCENTILE = 0.995


def train_stage(args: argparse.Namespace, cfg: RunConfig) -> str:
    """Train RUN/noisy_classifier (`vcdm train noisy-classifier RUN`); returns a one-line summary.

    Args:
        args: the `train` subcommand's namespace (run, force, no_progress).
        cfg: the run's resolved config (architecture cfg.eval.classifier, budget cfg.eval.classifier_train,
            noise levels cfg.decoder.diffusion).
    """
    out = Path(args.run) / STAGE_DIR
    total = cfg.eval.classifier_train.total_nimg
    if stage_done(out, total):
        if not args.force:
            raise VcdmError(f"{out} already holds a noisy classifier trained for {total} images; pass "
                            "--force to train it again from scratch, or raise the budget with "
                            "--set eval.classifier_train.total_nimg=N to continue")  # fmt: skip
        shutil.rmtree(out)
    res = train_noisy_classifier(args.run, cfg, load_dataset(cfg.data), progress=not args.no_progress)
    speed = f"{res.images_per_second:.0f} img/s"
    return f"noisy-classifier: {res.nimg} images in {res.seconds:.0f} s ({speed}); exported to {out}"


def add_guidance_args(parser: argparse.ArgumentParser) -> None:
    """Add the classifier / CLIP guidance and thresholding flags to `vcdm sample`."""
    g = parser.add_argument_group("guidance of the image decoder (applied after classifier-free guidance)")
    g.add_argument("--classifier-scale", type=float, default=0.0, metavar="S",
                   help="classifier guidance scale s (Dhariwal & Nichol 2021) toward --label, with the noisy "
                   "classifier of `vcdm train noisy-classifier RUN`; 0 = off (default: 0)")  # fmt: skip
    g.add_argument("--clip-scale", type=float, default=0.0, metavar="S",
                   help="CLIP guidance scale toward --clip-target-image or --clip-target-text, through the "
                   "run's embedder; 0 = off (default: 0)")  # fmt: skip
    g.add_argument("--clip-target-image", metavar="PATH", help="image whose embedding CLIP guidance targets")
    g.add_argument(
        "--clip-target-text",
        metavar="TEXT",
        help="prompt whose embedding CLIP guidance targets (CLIP embedders)",
    )
    g.add_argument("--clip-through", choices=THROUGH, default="x0",
                   help="x0: gradient through the decoder (exact); denoised: a step on the denoised image "
                   "only (cheaper) (default: x0)")  # fmt: skip
    g.add_argument("--threshold", choices=THRESHOLDS, default="none",
                   help="clip the denoised image at every step: static (to [-1, 1]) or dynamic (Imagen) "
                   "(default: none)")  # fmt: skip
    g.add_argument(
        "--threshold-percentile",
        type=float,
        metavar="P",
        help=f"dynamic thresholding's percentile in (0, 1] (default: {DEFAULT_PERCENTILE})",
    )


def _arg(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


def load_target_image(path: str | Path, embedder: object) -> torch.Tensor:
    """Read a target image as (1, C, H, W) float32 in [-1, 1], fitted to a learned embedder's input size."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = to_l_or_rgb(img)
    except Exception as e:  # PIL raises many types on unreadable files
        raise VcdmError(f"--clip-target-image: cannot read {path} ({type(e).__name__}: {e})") from None
    if isinstance(embedder, LearnedEmbedder):
        enc = embedder.encoder.cfg
        pixels = conform_image(img, enc.image_size, enc.in_channels)
    else:
        pixels = conform_image(img, None, 1 if img.mode == "L" else 3)
    return torch.from_numpy(np.array(pixels)).float()[None] / 127.5 - 1


def _classifier_wrapper(args: argparse.Namespace, device: torch.device | str) -> Wrapper | None:
    scale = _arg(args, "classifier_scale", 0.0) or 0.0
    if scale == 0:
        return None
    if scale < 0:
        raise VcdmError(f"--classifier-scale must be >= 0, got {scale}")
    if _arg(args, "label") is None:
        raise VcdmError("--classifier-scale needs --label: the class to guide toward")
    path = Path(args.run) / STAGE_DIR
    classifier = load_noisy_classifier(path, device)
    label, num_classes = int(args.label), classifier.cfg.num_classes
    if not 0 <= label < num_classes:
        raise VcdmError(f"--label must be in [0, {num_classes - 1}] for the noisy classifier, got {label}")
    sigma_data = noisy_classifier_sigma_data(path)
    return lambda d: classifier_guidance(d, classifier, label, scale, sigma_data=sigma_data)


def _clip_wrapper(
    args: argparse.Namespace, cfg: RunConfig | None, device: torch.device | str
) -> Wrapper | None:
    scale = _arg(args, "clip_scale", 0.0) or 0.0
    image, text = _arg(args, "clip_target_image"), _arg(args, "clip_target_text")
    if scale == 0:
        if image is not None or text is not None:
            raise VcdmError("--clip-target-image / --clip-target-text need --clip-scale S (S > 0)")
        return None
    if scale < 0:
        raise VcdmError(f"--clip-scale must be >= 0, got {scale}")
    if (image is None) == (text is None):
        raise VcdmError(
            "--clip-scale needs exactly one of --clip-target-image PATH or --clip-target-text TEXT"
        )
    cfg = cfg or load_config(Path(args.run) / "config.json")
    embedder = load_embedder(args.run, cfg)
    if embedder is None:
        raise VcdmError(f"--clip-scale needs an image embedder, but embedder.kind is {cfg.embedder.kind!r}")
    if isinstance(embedder, LearnedEmbedder):
        embedder.encoder.to(device)
    target = clip_target(embedder, text=text) if text is not None else None
    if image is not None:
        target = clip_target(embedder, image=load_target_image(image, embedder))
    embed_fn, through = image_embed_fn(embedder), _arg(args, "clip_through", "x0")
    return lambda d: clip_guidance(d, embed_fn, target.to(device), scale, through=through)


def _threshold_wrapper(args: argparse.Namespace) -> Wrapper | None:
    kind, percentile = _arg(args, "threshold", "none") or "none", _arg(args, "threshold_percentile")
    if kind not in THRESHOLDS:
        raise VcdmError(f"--threshold must be one of {THRESHOLDS}, got {kind!r}")
    if percentile is not None and kind != "dynamic":
        raise VcdmError("--threshold-percentile applies only to --threshold dynamic")
    if kind == "static":
        return static_threshold
    if kind == "dynamic":
        p = DEFAULT_PERCENTILE if percentile is None else percentile
        if not 0 < p <= 1:
            raise VcdmError(f"--threshold-percentile must be in (0, 1], got {p}")
        return lambda d: dynamic_threshold(d, p)
    return None


def guidance_wrappers(
    args: argparse.Namespace, cfg: RunConfig | None = None, *, device: torch.device | str = "cpu"
) -> Wrapper:
    """The decoder wrapper that `vcdm sample`'s guidance flags ask for: classifier guidance, then CLIP
    guidance, then thresholding (last, so it bounds the final x0_hat); the identity when none is set.

    Args:
        args: the `sample` namespace (run, label, and the flags of `add_guidance_args`).
        cfg: the run's resolved config (for the embedder); None reads RUN/config.json.
        device: where the classifier / embedder run (the decoder's device).
    Returns:
        a function denoiser -> denoiser, to apply after classifier-free guidance.
    """
    return compose(
        _classifier_wrapper(args, device), _clip_wrapper(args, cfg, device), _threshold_wrapper(args)
    )


def uses_label_for_guidance_only(args: argparse.Namespace, class_conditional: bool) -> bool:
    """True when --label only steers classifier guidance (the model itself takes no label): the Pipeline
    must then be called with labels=None."""
    return (_arg(args, "classifier_scale", 0.0) or 0.0) > 0 and not class_conditional
