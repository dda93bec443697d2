"""Datasets (embedded MNIST, image folders, .npz archives) and image I/O (uint8 conversion, PNG grids)."""

from vcdm.data.dataset import DataConfig, load_dataset
from vcdm.data.folder import load_image_folder
from vcdm.data.images import ImageData, make_grid, save_grid, save_images, save_png, to_uint8
from vcdm.data.mnist import load_mnist
from vcdm.data.npz import load_npz
from vcdm.fileio import atomic_write_bytes

__all__ = [
    "DataConfig",
    "ImageData",
    "atomic_write_bytes",
    "load_dataset",
    "load_image_folder",
    "load_mnist",
    "load_npz",
    "make_grid",
    "save_grid",
    "save_images",
    "save_png",
    "to_uint8",
]
