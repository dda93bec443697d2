"""Image-folder datasets: class subfolders give labels, images directly in the folder give none.

Layouts:
    root/cat/001.png, root/dog/x/002.jpg, ...   labelled: sorted subfolder names -> classes 0..K-1
    root/001.png, root/002.jpg, ...             unlabelled
Files ending .png, .jpg or .jpeg (any case) count as images, searched recursively within a class folder;
names starting with "." are skipped. Everything is visited in sorted order, so loading is deterministic.
Captions (for the text stages): a text file beside an image with the same stem (001.png + 001.txt, UTF-8) is its
caption; when any image has one, every image must.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from vcdm.data.images import ImageData, conform_image, to_l_or_rgb
from vcdm.errors import VcdmError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_KIND = {"L": "grayscale", "RGB": "colour"}


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below `folder` (hidden files and folders skipped), sorted by relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [p for p in (Path(dirpath, f) for f in filenames) if _is_image(p)]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def list_image_folder(root: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...]]:
    """Find the images of a folder dataset and their labels.

    Returns:
        (files, labels, class_names): labels is None and class_names () for an unlabelled folder.
    """
    if not root.is_dir():
        raise VcdmError(f"{root}: image folder not found (expected a folder of .png/.jpg images)")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    top_images = [p for p in entries if _is_image(p)]
    class_files = {p.name: _images_under(p) for p in entries if p.is_dir()}
    if top_images:
        mixed = next((name for name, files in class_files.items() if files), None)
        if mixed is not None:
            raise VcdmError(
                f"{root}: has images both at the top ({top_images[0].name}) and in subfolder {mixed}/; "
                "expected only class subfolders (labelled) or only images at the top (unlabelled)"
            )
        return top_images, None, ()
    if not any(class_files.values()):
        raise VcdmError(f"{root}: no images found (expected {', '.join(IMAGE_EXTENSIONS)} files)")
    files, labels = [], []
    for label, (name, found) in enumerate(class_files.items()):
        if len(found) < 2:
            raise VcdmError(
                f"{root / name}: class folder has {len(found)} image(s), expected at least 2 "
                "(one subfolder per class, not per image)"
            )
        files += found
        labels += [label] * len(found)
    return files, labels, tuple(class_files)


def _read(path: Path) -> Image.Image:
    """Decode one file fully into an "L" or "RGB" image (EXIF rotation applied); VcdmError if unreadable."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncated or corrupt data fails here and not later
            return to_l_or_rgb(ImageOps.exif_transpose(img))
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...) on bad data
        raise VcdmError(
            f"{path}: cannot read image ({type(e).__name__}: {e}); expected a valid PNG or JPEG"
        ) from e


def load_image_folder(
    path: str | os.PathLike,
    image_size: int | None = None,
    channels: int | None = None,
    *,
    limit: int | None = None,
) -> ImageData:
    """Load an image folder (see the module docstring for the layouts).

    Args:
        path: the dataset folder.
        image_size: None keeps the native size (then all images must share it); else resize the
            shorter side to image_size and centre-crop to a square.
        channels: None keeps the native channels (then all must be gray or all colour); 1 or 3 converts.
        limit: read only the first `limit` files in sorted order (None = all).

    Returns:
        ImageData with uint8 (N, C, H, W) images and int64 labels (or None when unlabelled).
    """
    root = Path(path)
    files, labels, class_names = list_image_folder(root)
    files = files[:limit]
    images = None  # uint8 (N, C, H, W), allocated once the first image fixes C, H, W
    for i, file in enumerate(files):
        img = _read(file)
        if i == 0:
            first, first_mode, first_size = file, img.mode, img.size
            target_channels = channels or (1 if img.mode == "L" else 3)
        elif channels is None and img.mode != first_mode:
            raise VcdmError(
                f"{file}: image is {_KIND[img.mode]} but {first} is {_KIND[first_mode]}; "
                "set --data.channels 1 or 3 to convert all images"
            )
        elif image_size is None and img.size != first_size:
            raise VcdmError(
                f"{file}: image is {img.size[0]}x{img.size[1]} but {first} is "
                f"{first_size[0]}x{first_size[1]}; set --data.image_size to resize all images"
            )
        pixels = conform_image(img, image_size, target_channels)
        if images is None:
            images = np.empty((len(files), *pixels.shape), dtype=np.uint8)
        images[i] = pixels
    label_tensor = None if labels is None else torch.tensor(labels[: len(files)], dtype=torch.int64)
    return ImageData(
        torch.from_numpy(images), label_tensor, class_names, str(root), captions=_captions(files)
    )


def _captions(files: list[Path]) -> list[str] | None:
    """The sidecar captions (IMAGE.txt) of the images, or None when none has one."""
    sidecars = [f.with_suffix(".txt") for f in files]
    have = [s.is_file() for s in sidecars]
    if not any(have):
        return None
    if not all(have):
        raise VcdmError(f"{sidecars[have.index(False)]}: missing; captions are read from a .txt beside each image, "
                        f"and {sum(have)} of {len(files)} images have one")  # fmt: skip
    texts = []
    for s in sidecars:
        try:
            text = s.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise VcdmError(f"{s}: cannot read the caption ({e})") from None
        if not text:
            raise VcdmError(f"{s}: the caption is empty")
        texts.append(text)
    return texts
