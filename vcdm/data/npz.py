"""Datasets stored as a numpy .npz archive (numpy.savez).

Keys: `images`, uint8 (N, H, W) or (N, H, W, C) with C in {1, 3}; optional `labels`, integer (N,) class
indices >= 0 (the classes are then 0..max(labels), named "0", "1", ...); optional `captions`, a unicode string
array (N,) (numpy.str_, e.g. np.array(["red heart", ...])), one non-empty text per image, for the text stages.
Loaded with allow_pickle=False, so an archive can hold plain arrays only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vcdm.data.images import ImageData, conform_array
from vcdm.errors import VcdmError

_EXPECTED = (
    "expected key 'images' uint8 (N, H, W) or (N, H, W, C) with C 1 or 3, optional 'labels' integer (N,) and "
    "'captions' unicode strings (N,)"
)
MAX_CLASSES = 100_000  # labels are one-hot encoded by the models; larger indices are surely a mistake


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    try:
        stream = open(path, "rb")  # our own handle: np.load leaks the one it opens when the zip is corrupt
    except OSError as e:
        raise VcdmError(f"{path}: cannot open the .npz file ({e.strerror})") from e
    with stream:
        try:
            archive = np.load(stream, allow_pickle=False)
        except Exception as e:  # zipfile, pickle and format errors all mean the same to the user
            raise VcdmError(f"{path}: not a valid .npz archive ({type(e).__name__}: {e}); {_EXPECTED}") from e
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise VcdmError(f"{path}: holds a single array (.npy), not an .npz archive; {_EXPECTED}")
        if "images" not in archive.files:
            found = ", ".join(archive.files) or "none"
            raise VcdmError(f"{path}: no 'images' array (found keys: {found}); {_EXPECTED}")
        try:
            images = archive["images"]
            labels = archive["labels"] if "labels" in archive.files else None
            captions = archive["captions"] if "captions" in archive.files else None
        except Exception as e:  # a damaged member, or an object array (refused without pickle)
            raise VcdmError(f"{path}: cannot read an array ({type(e).__name__}: {e}); {_EXPECTED}") from e
    return images, labels, captions


def _check_captions(path: Path, captions: np.ndarray, n: int) -> list[str]:
    """Captions as a list of stripped, non-empty strings, one per image."""
    if captions.dtype.kind != "U" or captions.shape != (n,):
        raise VcdmError(f"{path}: 'captions' has dtype {captions.dtype} and shape {captions.shape}, expected "
                        f"unicode strings ({n},) like 'images' (np.array(list_of_str))")  # fmt: skip
    texts = [str(c).strip() for c in captions]
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise VcdmError(
            f"{path}: caption {empty[0]} is empty ({len(empty)} empty in all); give every image a text"
        )
    return texts


def _check(path: Path, images: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """Validate the arrays; return images as (N, C, H, W)."""
    if images.dtype != np.uint8:
        raise VcdmError(f"{path}: 'images' has dtype {images.dtype}, expected uint8 (0-255)")
    shape = images.shape
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[3] not in (1, 3) or 0 in images.shape:
        raise VcdmError(
            f"{path}: 'images' has shape {shape}, expected (N, H, W) or (N, H, W, C), N >= 1, C 1 or 3"
        )
    if labels is not None:
        if not np.issubdtype(labels.dtype, np.integer):
            raise VcdmError(f"{path}: 'labels' has dtype {labels.dtype}, expected integer class indices")
        if labels.shape != (len(images),):
            raise VcdmError(
                f"{path}: 'labels' has shape {labels.shape}, expected ({len(images)},) like 'images'"
            )
        if labels.min() < 0 or labels.max() >= MAX_CLASSES:
            raise VcdmError(
                f"{path}: 'labels' range from {labels.min()} to {labels.max()}, expected 0..{MAX_CLASSES - 1}"
            )
    return images.transpose(0, 3, 1, 2)


def load_npz(
    path: str | os.PathLike,
    image_size: int | None = None,
    channels: int | None = None,
    *,
    limit: int | None = None,
) -> ImageData:
    """Load an .npz dataset (see the module docstring for its keys).

    Args:
        path: the .npz file.
        image_size: None keeps the stored size; else resize the shorter side and centre-crop to a square.
        channels: None keeps the stored channels; 1 or 3 converts.
        limit: keep only the first `limit` images (None = all).

    Returns:
        ImageData with uint8 (N, C, H, W) images and int64 labels (or None without a `labels` key).
    """
    path = Path(path)
    images, labels, captions = _read_arrays(path)
    texts = None if captions is None else _check_captions(path, captions, len(images))[:limit]
    images = _check(path, images, labels)[:limit]
    images = torch.from_numpy(np.ascontiguousarray(conform_array(images, image_size, channels)))
    if labels is None:
        return ImageData(images, None, (), str(path), captions=texts)
    class_names = tuple(str(i) for i in range(int(labels.max()) + 1))
    return ImageData(images, torch.from_numpy(labels[:limit].astype(np.int64)), class_names, str(path),
                     captions=texts)  # fmt: skip
