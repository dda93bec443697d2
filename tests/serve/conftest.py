"""Runs for the serve tests, trained once: a tiny MNIST run (embedder, prior, decoder, baseline) to sample and
edit, and a tiny cascade (RGB blobs, decoder at 8x8, upsampler to 16x16) to upsample."""

import numpy as np
import pytest

from vcdm.cli import main

BUDGET = [f"--set={s}.train.total_nimg=64" for s in ("embedder", "prior", "decoder", "baseline", "upsampler")]


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("serve") / "mnist"
    common = [str(run), "--preset", "tiny", "--no-progress"]
    assert main(["train", "embedder", *common]) == 0
    assert main(["embed", *common]) == 0
    for stage in ("prior", "decoder", "baseline"):
        assert main(["train", stage, *common]) == 0
    return run


@pytest.fixture(scope="session")
def cascade_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    images = np.zeros((32, 16, 16, 3), np.uint8)
    for img in images:  # a coloured disc on a dark background
        cx, cy = rng.integers(4, 12, 2)
        img[:] = rng.integers(0, 40, 3)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < rng.integers(9, 30)] = rng.integers(80, 255, 3)
    np.savez(root / "blobs.npz", images=images)
    run = root / "blobs"
    first = [str(run), "--preset", "tiny", "--no-progress", f"--set=data.source={root / 'blobs.npz'}",
             "--set=decoder.image_size=8", *BUDGET]  # fmt: skip
    assert main(["train", "embedder", *first]) == 0
    assert main(["embed", str(run), "--no-progress"]) == 0
    for stage in ("prior", "decoder", "baseline", "upsampler"):
        assert main(["train", stage, str(run), "--no-progress"]) == 0
    return run
