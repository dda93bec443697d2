"""Networks for tests whose weights depend on a seed only (a test module imports this rather than another test
module's private helpers; tests/ is on sys.path, as pytest puts the top conftest.py's folder there)."""

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def seeded_net(
    make: Callable[[], M], seed: int = 0, *, scale: float = 0.1, noise_seed: int | None = None
) -> M:
    """`make()` in eval mode, its init drawn from `seed` (the global RNG left as it was), and its zero-initialised
    parameters (output layers, null tokens) set to `scale` x Gaussian noise from `noise_seed` (default seed + 1),
    so that every path of the network shows in its output."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = make()
    generator = torch.Generator().manual_seed(seed + 1 if noise_seed is None else noise_seed)
    with torch.no_grad():
        for param in net.parameters():
            if not param.any():
                param.copy_(scale * torch.randn(param.shape, generator=generator))
    return net.eval()
