"""Helpers shared by the editing methods (vcdm.editing.guided, vcdm.editing.inpaint): a sampler from its name, and
one input per seed."""

from __future__ import annotations

from torch import Tensor

from vcdm.errors import VcdmError
from vcdm.samplers import SAMPLERS
from vcdm.samplers.common import Sampler


def sampler_fn(sampler: str | Sampler) -> Sampler:
    """A sampler function: `sampler` itself when callable, else the one of that name in vcdm.samplers.SAMPLERS
    (a VcdmError listing them for an unknown name)."""
    if callable(sampler):
        return sampler
    if sampler not in SAMPLERS:
        raise VcdmError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    return SAMPLERS[sampler]


def per_seed(images: Tensor, n: int, name: str) -> Tensor:
    """One image for every seed: (1, ...) is repeated (expanded, not copied), (n, ...) is kept; `name` names the
    argument in the VcdmError for any other count."""
    if len(images) not in (1, n):
        raise VcdmError(f"{name}: got {len(images)} images for {n} seeds (expected 1 or {n})")
    return images.expand(n, *images.shape[1:])
