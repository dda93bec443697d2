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
