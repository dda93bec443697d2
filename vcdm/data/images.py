"""Images in memory and on disk: the ImageData container, size/channel conforming, PNG output.

Every dataset source (embedded MNIST, image folder, .npz) goes through `conform_image` so that resizing
and grayscale/RGB conversion behave identically whatever the origin. PNGs are written atomically with
`vcdm.fileio.atomic_write_bytes` (re-exported by vcdm.data): a reader never sees a half-written file.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vcdm.fileio import atomic_write_bytes

# PIL modes holding one (gray) channel; every other mode is treated as colour.
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


@dataclass
class ImageData:
    """A set of images with optional class labels, as loaded from one source.

    Attributes:
        images: uint8 (N, C, H, W), C = 1 (gray) or 3 (RGB).
        labels: int64 (N,) class indices in [0, num_classes), or None when unlabelled.
        class_names: one name per class index; () when unlabelled.
        source: human-readable origin, e.g. "mnist:train" or the folder path.
        captions: one text per image (e.g. the emoji dataset's names), or None.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: tuple[str, ...]
    source: str
    captions: list[str] | None = None
    _resized: dict[int, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 (N, 1|3, H, W), got {self.images.dtype} {self.images.shape}"
            )
        if self.captions is not None and len(self.captions) != len(self.images):
            raise ValueError(f"captions must be {len(self.images)}, one per image, got {len(self.captions)}")
        if self.labels is None:
            if self.class_names:
                raise ValueError("class_names given without labels")
            return
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be int64 ({len(self.images)},), got {self.labels.dtype} {self.labels.shape}"
            )
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes})")

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when unlabelled)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor | slice) -> ImageData:
        """The images (labels, captions) selected by `index` (a slice, an int64 index or a bool mask (N,))."""
        labels = None if self.labels is None else self.labels[index]
        captions = None
        if self.captions is not None:  # the rows `index` picks, found the way torch indexes the images
            captions = [self.captions[i] for i in torch.arange(len(self.images))[index].tolist()]
        return ImageData(self.images[index], labels, self.class_names, self.source, captions)

    def images_at(self, size: int | None) -> torch.Tensor:
        """The images at size x size (`resize_images`), computed once per size; None or the images' own size
        gives `images` itself."""
        _, _, h, w = self.images.shape
        if size is None or h == w == size:
            return self.images
        if size not in self._resized:
            self._resized[size] = resize_images(self.images, size)
        return self._resized[size]

    def as_float(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images as float32 in [-1, 1], (N, C, H, W) or the rows selected by `index`."""
        images = self.images if index is None else self.images[index]
        return images.float() / 127.5 - 1


def to_l_or_rgb(img: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to "L" (gray modes) or "RGB" (colour modes); alpha is dropped."""
    if img.mode.startswith("I;16"):
        # 16-bit gray: keep the high byte (PIL's convert("L") would clip everything above 255 to white).
        return Image.fromarray((np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8), mode="L")
    return img.convert("L" if img.mode in _GRAY_MODES else "RGB")


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize (bicubic, antialiased) so the shorter side is `size`, then centre-crop a size x size square."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def conform_image(img: Image.Image, image_size: int | None, channels: int) -> np.ndarray:
    """Bring one image to the dataset's channel count and (optionally) square size.

    Args:
        img: a PIL image in mode "L" or "RGB" (see `to_l_or_rgb`).
        image_size: None keeps the native size; else resize the shorter side to it and centre-crop.
        channels: 1 (gray, ITU-R 601 luma) or 3 (RGB; gray is replicated).

    Returns:
        uint8 (channels, H, W).
    """
    img = img.convert("L" if channels == 1 else "RGB")
    if image_size is not None:
        img = resize_center_crop(img, image_size)
    pixels = np.asarray(img)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def conform_array(images: np.ndarray, image_size: int | None, channels: int | None) -> np.ndarray:
    """`conform_image` over a stored uint8 (N, C, H, W) array; returned unchanged when nothing is asked."""
    n, c, h, w = images.shape
    if channels in (None, c) and (image_size is None or h == w == image_size):
        return images
    out = [
        conform_image(
            Image.fromarray(img[0] if c == 1 else img.transpose(1, 2, 0)), image_size, channels or c
        )
        for img in images
    ]
    return np.stack(out) if out else images


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), each image as `conform_image` resizes it: bicubic with
    PIL's antialiasing (the filter widens with the reduction factor), shorter side to `size`, centre crop.

    How a run brings its images to a stage's own size (decoder.image_size, upsampler.low_res, ...), so that a
    base stage's training images and an upsampler's low-res inputs are the same pixels.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"resize_images expects uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    return torch.from_numpy(np.ascontiguousarray(conform_array(images.numpy(), size, None)))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] (any shape, e.g. (B, C, H, W)) -> uint8 in [0, 255], rounded and clamped.

    uint8 input is returned unchanged. NaN becomes 0 (black).
    """
    if images.dtype == torch.uint8:
        return images
    pixels = torch.nan_to_num((images.detach().float() + 1) * 127.5, nan=0.0)
    return pixels.round().clamp(0, 255).to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile a batch into one image, row-major, with black padding between and around the tiles.

    Args:
        images: (B, C, H, W), float in [-1, 1] or uint8.
        nrow: images per row; None gives ceil(sqrt(B)).
        padding: pixels between tiles and at the border.

    Returns:
        uint8 (C, rows * (H + padding) + padding, nrow * (W + padding) + padding), rows = ceil(B / nrow).
    """
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"make_grid expects a non-empty (B, C, H, W) batch, got shape {tuple(images.shape)}")
    images = to_uint8(images).cpu()
    b, c, h, w = images.shape
    nrow = min(b, nrow or math.ceil(math.sqrt(b)))
    rows = math.ceil(b / nrow)
    grid = torch.zeros(c, rows * (h + padding) + padding, nrow * (w + padding) + padding, dtype=torch.uint8)
    for i, img in enumerate(images):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[:, top : top + h, left : left + w] = img
    return grid


def save_png(image_uint8_chw: torch.Tensor, path: str | os.PathLike) -> None:
    """Save one uint8 (C, H, W) image, C = 1 (gray), 3 (RGB) or 4 (RGBA), as a PNG, atomically."""
    image = image_uint8_chw.detach().cpu()
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"save_png expects uint8 (1|3|4, H, W), got {image.dtype} {tuple(image.shape)}")
    pixels = image.numpy()
    pil = Image.fromarray(pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> None:
    """Save a batch (B, C, H, W), float in [-1, 1] or uint8, as one PNG grid (see `make_grid`)."""
    save_png(make_grid(images, nrow), path)


def save_images(images: torch.Tensor, directory: str | os.PathLike, names: list[str]) -> list[Path]:
    """Save each image of a batch as its own PNG, atomically.

    Args:
        images: (B, C, H, W), float in [-1, 1] or uint8.
        directory: output folder (created if missing).
        names: B distinct plain file names; ".png" is appended where missing.

    Returns:
        The B written paths, in batch order.
    """
    if len(names) != len(images):
        raise ValueError(f"save_images got {len(images)} images but {len(names)} names")
    files = [n if n.lower().endswith(".png") else f"{n}.png" for n in names]
    if len(set(files)) != len(files) or any(Path(f).name != f or f.startswith(".") for f in files):
        raise ValueError(f"save_images needs distinct plain file names, got {names}")
    paths = [Path(directory) / f for f in files]
    for image, path in zip(to_uint8(images), paths):
        save_png(image, path)
    return paths


def load_pngs(paths: list[Path]) -> torch.Tensor:
    """Read image files written by `save_images` back as float32 [-1, 1] (N, C, H, W)."""
    arrays = []
    for p in paths:
        with Image.open(p) as img:
            a = np.asarray(to_l_or_rgb(img))
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays)).float() / 127.5 - 1
