"""Runs for the serve tests, trained once: a tiny MNIST run (embedder, prior, decoder, baseline) to sample and
edit; the tiny cascade to upsample is tests/conftest.py's `cascade_run` (its run directory is named "blobs")."""

import pytest
from fake_runs import train_tiny_run


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("serve") / "mnist")
