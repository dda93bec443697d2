"""Runs for the serve tests, trained once: a tiny MNIST run (embedder, prior, decoder, baseline) to sample and
edit; the tiny cascade to upsample is tests/conftest.py's `cascade_run` (its run directory is named "blobs")."""

import pytest

from vcdm.cli import main


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("serve") / "mnist"
    common = [str(run), "--preset", "tiny", "--no-progress"]
    assert main(["train", "embedder", *common]) == 0
    assert main(["embed", *common]) == 0
    for stage in ("prior", "decoder", "baseline"):
        assert main(["train", stage, *common]) == 0
    return run
