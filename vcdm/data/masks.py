"""Masks for inpainting and uncropping (Palette, RePaint): 1 marks a pixel to fill, 0 a known pixel.

Training draws them on the fly from the loop's generator (`random_masks`); evaluation uses one fixed mask per
image index (`fixed_masks`), so that every method is scored on the same holes. Two families:

    inpaint: free-form strokes (polylines of random width, as in Palette's and LaMa's irregular masks) and
             axis-aligned boxes, at least one of either;
    uncrop:  a band along one side (left, right, top or bottom), or around all four ("around"), of random
             width; the rest of the image is known.

Masks are float32 (N, 1, H, W) in {0, 1}. `read_mask` loads a user's PNG (white = to fill).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vcdm.errors import VcdmError
from vcdm.seeding import MASKS, generator

MASK_TASKS = ("inpaint", "uncrop")
UNCROP_SIDES = ("left", "right", "top", "bottom", "around")


def _check_range(name: str, lo_hi: tuple[float, float], lo: float, hi: float) -> tuple[float, float]:
    ok = isinstance(lo_hi, tuple | list) and len(lo_hi) == 2 and lo <= lo_hi[0] <= lo_hi[1] <= hi
    if not ok:
        raise VcdmError(f"{name} must be two numbers {lo} <= lo <= hi <= {hi}, got {lo_hi!r}")
    return float(lo_hi[0]), float(lo_hi[1])


@dataclass(frozen=True)
class MaskConfig:
    """How training masks are drawn; sizes are fractions of the image side."""

    strokes: tuple[int, int] = (1, 3)  # number of free-form strokes, uniform in [lo, hi]
    stroke_width: tuple[float, float] = (0.08, 0.2)  # stroke thickness
    stroke_length: tuple[float, float] = (0.15, 0.45)  # length of each segment of a stroke (3-5 segments)
    boxes: tuple[int, int] = (0, 2)  # number of boxes, uniform in [lo, hi]
    box_size: tuple[float, float] = (0.2, 0.5)  # box height and width, each uniform in [lo, hi]
    band: tuple[float, float] = (0.25, 0.5)  # uncrop: the band's width ("around": half of it on each side)

    def __post_init__(self) -> None:
        for name in ("strokes", "boxes"):
            lo_hi = getattr(self, name)
            ok = (
                isinstance(lo_hi, tuple | list) and len(lo_hi) == 2 and all(isinstance(v, int) for v in lo_hi)
            )
            if not ok or not 0 <= lo_hi[0] <= lo_hi[1]:
                raise VcdmError(f"palette.masks.{name} must be two integers 0 <= lo <= hi, got {lo_hi!r}")
            object.__setattr__(self, name, (int(lo_hi[0]), int(lo_hi[1])))
        if self.strokes[1] + self.boxes[1] == 0:
            raise VcdmError("palette.masks: strokes and boxes cannot both be (0, 0)")
        for name in ("stroke_width", "stroke_length", "box_size"):
            object.__setattr__(
                self, name, _check_range(f"palette.masks.{name}", getattr(self, name), 0.01, 1.0)
            )
        object.__setattr__(self, "band", _check_range("palette.masks.band", self.band, 0.05, 0.95))


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (), generator=g))


def _segment_distance(yy: Tensor, xx: Tensor, a: tuple[float, float], b: tuple[float, float]) -> Tensor:
    """Distance of every pixel centre (yy, xx) to the segment a-b (points as (y, x))."""
    ay, ax = a
    by, bx = b
    dy, dx = by - ay, bx - ax
    length2 = dy * dy + dx * dx
    t = ((yy - ay) * dy + (xx - ax) * dx) / length2 if length2 > 0 else torch.zeros_like(yy)
    t = t.clamp(0, 1)
    return ((yy - ay - t * dy) ** 2 + (xx - ax - t * dx) ** 2).sqrt()


def inpaint_mask(size: int, g: torch.Generator, cfg: MaskConfig = MaskConfig()) -> Tensor:
    """One free-form mask (1, size, size): strokes and boxes, never empty."""
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    mask = torch.zeros(size, size, dtype=torch.bool)
    n_strokes, n_boxes = _randint(g, *cfg.strokes), _randint(g, *cfg.boxes)
    if n_strokes + n_boxes == 0:
        n_strokes, n_boxes = (1, 0) if cfg.strokes[1] > 0 else (0, 1)
    for _ in range(n_strokes):
        width = _uniform(g, *cfg.stroke_width) * size
        point = (_uniform(g, 0, size), _uniform(g, 0, size))
        angle = _uniform(g, 0, 2 * math.pi)
        for _ in range(_randint(g, 3, 5)):
            angle += _uniform(g, -math.pi / 2, math.pi / 2)  # a stroke bends, it does not zigzag back
            length = _uniform(g, *cfg.stroke_length) * size
            nxt = (min(max(point[0] + length * math.sin(angle), 0.0), size),
                   min(max(point[1] + length * math.cos(angle), 0.0), size))  # fmt: skip
            mask |= _segment_distance(yy, xx, point, nxt) <= width / 2
            point = nxt
    for _ in range(n_boxes):
        h, w = (max(1, round(_uniform(g, *cfg.box_size) * size)) for _ in range(2))
        top, left = _randint(g, 0, size - h), _randint(g, 0, size - w)
        mask[top : top + h, left : left + w] = True
    return mask.float()[None]


def uncrop_mask(size: int, side: str, width: float) -> Tensor:
    """The border band (1, size, size) along `side` (UNCROP_SIDES) of `width` (a fraction of the side;
    "around" takes width / 2 on each side); the band covers at least 1 pixel and leaves at least 1 known."""
    if side not in UNCROP_SIDES:
        raise VcdmError(f"uncrop side must be one of {UNCROP_SIDES}, got {side!r}")
    if not 0 < width < 1:
        raise VcdmError(f"uncrop width must be a fraction in (0, 1), got {width}")
    mask = torch.zeros(size, size)
    if side == "around":
        k = min(max(1, round(width * size / 2)), (size - 1) // 2)
        mask[:k], mask[-k:], mask[:, :k], mask[:, -k:] = 1, 1, 1, 1
        return mask[None]
    k = min(max(1, round(width * size)), size - 1)
    index = {"left": (slice(None), slice(0, k)), "right": (slice(None), slice(size - k, size)),
             "top": (slice(0, k), slice(None)), "bottom": (slice(size - k, size), slice(None))}[side]  # fmt: skip
    mask[index] = 1
    return mask[None]


def draw_mask(task: str, size: int, g: torch.Generator, cfg: MaskConfig = MaskConfig()) -> Tensor:
    """One random mask (1, size, size) of `task` ("inpaint" or "uncrop") from generator g."""
    if task == "inpaint":
        return inpaint_mask(size, g, cfg)
    if task == "uncrop":
        side = UNCROP_SIDES[_randint(g, 0, len(UNCROP_SIDES) - 1)]
        return uncrop_mask(size, side, _uniform(g, *cfg.band))
    raise VcdmError(f"masks are drawn for tasks {MASK_TASKS}, got {task!r}")


def random_masks(task: str, n: int, size: int, g: torch.Generator, cfg: MaskConfig = MaskConfig()) -> Tensor:
    """n training masks (n, 1, size, size), drawn one after another from g."""
    return torch.stack([draw_mask(task, size, g, cfg) for _ in range(n)])


def fixed_masks(task: str, indices: range | list[int], size: int, seed: int = 0,
                cfg: MaskConfig = MaskConfig()) -> Tensor:  # fmt: skip
    """The evaluation masks of images `indices`: mask i depends on (seed, i) only."""
    return torch.stack([draw_mask(task, size, generator(seed, MASKS, int(i)), cfg) for i in indices])


def read_mask(path: str | Path, size: int) -> Tensor:
    """A mask PNG (white = to fill; any mode, thresholded at half) as (1, 1, size, size) float32 {0, 1}.
    A mask of another size is refused, naming the file and both sizes."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            gray = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise VcdmError(f"{path}: mask file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise VcdmError(f"{path}: not a readable image ({e})") from None
    if gray.shape != (size, size):
        raise VcdmError(f"{path}: the mask is {gray.shape[1]}x{gray.shape[0]} but the image is {size}x{size}; "
                        "draw the mask at the image's size (white = to fill)")  # fmt: skip
    return torch.from_numpy(gray >= 128).float()[None, None]
