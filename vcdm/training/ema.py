"""Exponential moving average of weights with a half-life counted in images (Karras et al. 2022, EDM)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_beta(batch_size: int, nimg: int, halflife_nimg: float, rampup: float | None) -> float:
    """Per-step decay: beta = 0.5 ** (batch / half-life), with half-life = min(H, rampup * images seen)."""
    halflife = halflife_nimg if rampup is None else min(halflife_nimg, rampup * nimg)
    return 0.5 ** (batch_size / max(halflife, 1e-8))


class EMA:
    """Keeps an EMA copy of a model; `update` after each optimiser step."""

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, beta: float) -> None:
        for p_ema, p in zip(self.model.parameters(), model.parameters(), strict=True):
            p_ema.lerp_(p.detach(), 1 - beta)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
