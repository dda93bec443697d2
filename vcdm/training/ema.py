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
    """Keeps an EMA copy of a model; `update` after each optimiser step.

    The parameter and buffer lists of both models are looked up once (those of the trained model at its
    first `update`): loading weights or moving the model keeps them valid, but a model whose parameters
    are replaced by new tensor objects needs a new EMA.
    """

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._params = list(self.model.parameters())
        self._buffers = list(self.model.buffers())
        self._source: nn.Module | None = None
        self._source_tensors: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])

    @torch.no_grad()
    def update(self, model: nn.Module, beta: float) -> None:
        """p_ema.lerp_(p, 1 - beta) for every parameter and a copy of every buffer, as one foreach call
        each: the same numbers as a loop of lerp_ / copy_ per tensor, without the Python per tensor."""
        if model is not self._source:
            params, buffers = list(model.parameters()), list(model.buffers())
            if len(params) != len(self._params) or len(buffers) != len(self._buffers):
                raise ValueError("EMA.update: the model's parameters or buffers differ from the EMA copy's")
            self._source, self._source_tensors = model, (params, buffers)
        params, buffers = self._source_tensors
        if params:
            torch._foreach_lerp_(self._params, params, 1 - beta)
        if buffers:
            torch._foreach_copy_(self._buffers, buffers)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
