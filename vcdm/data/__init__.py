"""Datasets (embedded MNIST, emoji, image folders, .npz archives) and image I/O (uint8 conversion, PNG grids)."""

from vcdm.data.dataset import DataConfig, load_dataset
from vcdm.data.folder import load_image_folder
from vcdm.data.images import (
    ImageData,
    make_grid,
    resize_images,
    save_grid,
    save_images,
    save_png,
    to_uint8,
)
from vcdm.data.mnist import load_mnist
from vcdm.data.npz import load_npz
from vcdm.fileio import atomic_write_bytes

__all__ = [
    "DataConfig",
    "ImageData",
    "atomic_write_bytes",
    "fetch_emoji",
    "load_dataset",
    "load_emoji",
    "load_image_folder",
    "load_mnist",
    "load_npz",
    "make_grid",
    "resize_images",
    "save_grid",
    "save_images",
    "save_png",
    "to_uint8",
]


def __getattr__(name: str) -> object:
    # vcdm.data.emoji is imported on first use, so that `python -m vcdm.data.emoji` does not import it twice.
    if name in ("fetch_emoji", "load_emoji"):
        from vcdm.data import emoji

        return getattr(emoji, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
