"""Fake data sets the tests of several modules train on, built in memory (a test module imports these rather than
another test module's private helpers; tests/ is on sys.path, as pytest puts the top conftest.py's folder there)."""

import numpy as np
import torch

from vcdm.data import ImageData

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}
SHAPES = ("square", "bar", "dot")


def blobs(n: int = 32, size: int = 16, seed: int = 0, radius2: int | None = None) -> ImageData:
    """Smooth RGB images (a coloured disc on a dark background) with 2 classes; the disc's squared radius is
    `radius2` when given, else drawn in [9, 30)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    for i in range(n):
        cx, cy = torch.randint(4, size - 4, (2,), generator=g).tolist()
        r2 = radius2 if radius2 is not None else torch.randint(9, 30, (1,), generator=g).item()
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r2
        images[i] = torch.randint(0, 40, (3, 1, 1), generator=g, dtype=torch.uint8)
        images[i][:, disc] = torch.randint(80, 255, (3, 1), generator=g, dtype=torch.uint8)
    return ImageData(images, torch.arange(n) % 2, ("a", "b"), "blobs")


def blob_array(n: int = 32, size: int = 16) -> np.ndarray:
    """Discs as `blobs` draws them, from numpy's generator: uint8 (N, H, W, 3), as an .npz data source holds them."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size, 3), np.uint8)
    for img in images:  # a coloured disc on a dark background
        cx, cy = rng.integers(4, size - 4, 2)
        img[:] = rng.integers(0, 40, 3)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < rng.integers(9, 30)] = rng.integers(80, 255, 3)
    return images


def captioned(size: int = 16) -> ImageData:
    """12 captions "<colour> <shape>", two images of each (as two emoji vendors draw one name)."""
    images, captions = [], []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            for vendor in range(2):
                img = torch.full((3, size, size), 255, dtype=torch.uint8)
                lo, hi = (4 + vendor, 12 + vendor) if shape == "square" else (6 + vendor, 10 + vendor)
                if shape == "bar":
                    img[:, lo:hi, 1:-1] = torch.tensor(rgb, dtype=torch.uint8)[:, None, None]
                else:
                    img[:, lo:hi, lo:hi] = torch.tensor(rgb, dtype=torch.uint8)[:, None, None]
                images.append(img)
                captions.append(f"{colour} {shape}")
    return ImageData(torch.stack(images), None, (), "shapes", captions)


TEXT_COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30), "yellow": (230, 210, 20)}
TEXT_SHAPES = ("heart", "square", "disc")


def captioned_shapes(n: int = 48, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Captioned RGB images (N, size, size, 3) uint8 for an .npz: a coloured heart-ish blob, square or disc on
    white, jittered by up to 2 pixels, captioned "COLOUR SHAPE"; image i is TEXT_COLOURS[i % 4] and
    TEXT_SHAPES[(i // 4) % 3]."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    masks = {"heart": (np.abs(xx) + yy * 0.8) < 5, "square": (np.abs(xx) < 5) & (np.abs(yy) < 5),
             "disc": xx**2 + yy**2 < 25}  # fmt: skip
    images, captions = np.full((n, size, size, 3), 255, np.uint8), []
    for i in range(n):
        colour, shape = list(TEXT_COLOURS)[i % 4], TEXT_SHAPES[(i // 4) % 3]
        images[i][np.roll(masks[shape], rng.integers(-2, 3, 2), axis=(0, 1))] = TEXT_COLOURS[colour]
        captions.append(f"{colour} {shape}")
    return images, np.array(captions)
