"""Runs for tests, trained through the CLI (a test module imports this rather than another test module's private
helpers; tests/ is on sys.path, as pytest puts the top conftest.py's folder there)."""

from collections.abc import Sequence
from pathlib import Path

from vcdm.cli import main


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
