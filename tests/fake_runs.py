"""Runs for tests, trained through the CLI (a test module imports this rather than another test module's private
helpers; tests/ is on sys.path, as pytest puts the top conftest.py's folder there)."""

from collections.abc import Sequence
from pathlib import Path

from vcdm.cli import main
from vcdm.config import RunConfig, apply_overrides, preset


def train_tiny_run(
    run: Path, stages: Sequence[str] = ("prior", "decoder", "baseline"), *, embed_args: Sequence[str] = ()
) -> Path:
    """RUN trained on the tiny preset's data (256 MNIST images, seconds): the embedder, the embeddings (`vcdm embed
    RUN ... EMBED_ARGS`), then each of `stages`."""
    common = [str(run), "--preset", "tiny", "--no-progress"]
    assert main(["train", "embedder", *common]) == 0
    assert main(["embed", *common, *embed_args]) == 0
    for stage in stages:
        assert main(["train", stage, *common]) == 0
    return run


# the tiny text-to-image run's overrides (seconds per stage)
TEXT = [
    "clip.image_size=null", "clip.image.channels=[8,16]", "clip.image.width=32", "clip.text.width=32",
    "clip.text.depth=1", "clip.text.heads=2", "clip.text.vocab_size=300", "clip.text.context_length=8",
    "clip.dim=16", "clip.heldout_fraction=0.2", "clip.train.total_nimg=64", "clip.train.batch_size=16",
    "clip.train.warmup_nimg=16", "embedder.kind=clip-trained", "prior.condition=text",
    "decoder.condition=embedding+text", "baseline.condition=text", "prior.train.total_nimg=64",
    "decoder.train.total_nimg=32", "baseline.train.total_nimg=32", "sample.num_steps=3",
    "sample.prior_num_steps=3", "sample.batch_size=4",
]  # fmt: skip


def text_cfg(*overrides: str) -> RunConfig:
    """The tiny preset as a text-to-image run (a CLIP, the text prior, unCLIP's decoder, the GLIDE baseline)."""
    return apply_overrides(preset("tiny"), [*TEXT, *overrides])
