"""The one seed recipe: (seed, stream...) -> a torch.Generator, and per-seed noise.

Every random draw in vcdm comes from a generator made here, so that a result depends on its seed and on
*what* is drawn (the stream), never on the batch it is drawn in, the number of processes, or what was drawn
before. `mix_seed` turns a tuple of integers into a well-mixed 63-bit seed (numpy's SeedSequence), so nearby
seeds and streams give unrelated generators.

Streams in use (keep them distinct; a new component takes a new number):
    sampling a pipeline component: (seed, COMPONENT_STREAMS[name], START | FRESH)
    an upsampler's conditioning:   (seed, COMPONENT_STREAMS["upsampler"], AUG) (the low-res input's noise)
    editing procedures:            (seed, SDEDIT | ILVR | REPAINT | PALETTE, START | FRESH)
    evaluation masks:              (seed, MASKS, image index) (vcdm.data.masks.fixed_masks)
    training:                      (train.seed, images seen, micro-batch) and (train.seed, DATA_ORDER, epoch)
    initial weights of a stage:    (train.seed, the stage kind's init stream)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

# what a sampling stream draws: the starting noise, the fresh noise of stochastic samplers, and the noise of a
# component's conditioning augmentation (an upsampler's noised low-res input)
START, FRESH, AUG = 1, 2, 3
# per-component sampling streams of a pipeline (the prior and the decoder of one seed draw unrelated noise)
COMPONENT_STREAMS = {"prior": 11, "decoder": 12, "upsampler": 13}
SDEDIT, ILVR, REPAINT, PALETTE = 21, 22, 23, 24
MASKS = 0x3A5C
DATA_ORDER = 0xDA7A


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy SeedSequence)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, np.uint64)[0] >> 1)


def generator(*values: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by mix_seed(*values)."""
    return torch.Generator(device).manual_seed(mix_seed(*values))


def generators(seeds: Sequence[int], *stream: int) -> list[torch.Generator]:
    """One CPU generator per seed for the same stream: generator(seed, *stream) for each seed."""
    return [generator(s, *stream) for s in seeds]


def seeded_randn(
    seeds: Sequence[int],
    shape: tuple[int, ...],
    *stream: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Unit Gaussian tensors of `shape`, one per seed, stacked to (len(seeds), *shape).

    Each is drawn on the CPU from generator(seed, *stream), so it is the same on every device and in every
    batch; it is then moved to `device`.
    """
    noise = [torch.randn(shape, generator=g, dtype=dtype) for g in generators(seeds, *stream)]
    return torch.stack(noise).to(device)


__all__ = [
    "AUG",
    "COMPONENT_STREAMS",
    "DATA_ORDER",
    "FRESH",
    "ILVR",
    "SDEDIT",
    "START",
    "generator",
    "generators",
    "mix_seed",
    "seeded_randn",
]
