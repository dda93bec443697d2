import os

# Idle OpenMP threads sleep instead of spinning: with the default (spin) policy, 2 torch threads run ~5x
# slower whenever another process holds a core (measured on the 2-core machines), and the tests start
# subprocesses (torchrun). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch


@pytest.fixture(autouse=True)
def _threads():
    # Two cores here; tests use tiny shapes, so more threads only add overhead.
    torch.set_num_threads(2)
    yield


class GaussianDenoiser:
    """The ideal denoiser for data x0 ~ N(mu, std^2 I): E[x0 | x] = mu + std^2/(std^2 + sigma^2) (x - mu)."""

    def __init__(self, mu: float, std: float):
        self.mu, self.std = mu, std
        self.calls = 0

    def __call__(self, x, sigma, cond=None):
        self.calls += 1
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return self.mu + self.std**2 / (self.std**2 + s**2) * (x - self.mu)


@pytest.fixture
def gaussian_denoiser():
    return GaussianDenoiser(mu=0.3, std=0.5)


@pytest.fixture(scope="session")
def cascade_run(tmp_path_factory):
    """A tiny cascade trained once through the CLI on fake RGB data (32 coloured discs on dark backgrounds,
    16x16): embedder, embeddings, prior, a decoder and a baseline at 8x8, the upsampler 8 -> 16."""
    import numpy as np
    from fake_data import blob_array

    from vcdm.cli import main

    root = tmp_path_factory.mktemp("cascade")
    np.savez(root / "blobs.npz", images=blob_array(32, 16))
    run = root / "blobs"
    budget = [
        f"--set={s}.train.total_nimg=64" for s in ("embedder", "prior", "decoder", "baseline", "upsampler")
    ]
    first = [str(run), "--preset", "tiny", "--no-progress", f"--set=data.source={root / 'blobs.npz'}",
             "--set=decoder.image_size=8", *budget]  # fmt: skip
    assert main(["train", "embedder", *first]) == 0
    assert main(["embed", str(run), "--no-progress"]) == 0
    for stage in ("prior", "decoder", "baseline", "upsampler"):
        assert main(["train", stage, str(run), "--no-progress"]) == 0
    return run
