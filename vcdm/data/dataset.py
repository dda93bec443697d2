"""The dataset config and the one entry point that loads any source: embedded MNIST, emoji, image folder, .npz.

vcdm.data.emoji is imported where used, so that `python -m vcdm.data.emoji` does not import it twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vcdm.data.folder import load_image_folder
from vcdm.data.images import ImageData
from vcdm.data.mnist import SPLITS, load_mnist
from vcdm.data.npz import load_npz
from vcdm.errors import VcdmError


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class DataConfig:
    """Which images to train or evaluate on, and how to bring them to one shape."""

    source: str = "mnist"  # "mnist" (embedded) | "emoji[:google|:twitter]" | image folder | .npz file
    split: str = "train"  # MNIST: "train" (50k) | "valid" (10k) | "test" (10k); emoji: "train" | "test"
    image_size: int | None = (
        None  # None: keep native size (all must share it); else shorter side + centre crop
    )
    channels: int | None = None  # None: keep (1 = gray, 3 = RGB; all images must agree); 1 or 3 converts
    limit: int | None = None  # use only the first `limit` images (None = all)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise VcdmError(
                f"data.source: got {self.source!r}, expected 'mnist', an image folder or an .npz path"
            )
        if self.split not in SPLITS:
            raise VcdmError(f"data.split: got {self.split!r}, expected one of {', '.join(SPLITS)}")
        from vcdm.data import emoji

        if emoji.emoji_vendors(self.source) is not None:
            if self.split not in emoji.SPLITS:
                raise VcdmError(
                    f"data.split: got {self.split!r}, expected one of {', '.join(emoji.SPLITS)} for emoji"
                )
        elif self.split != "train" and self.source != "mnist":
            raise VcdmError(
                f"data.split: {self.split!r} applies only to sources 'mnist' and 'emoji'; leave it 'train' here"
            )
        if self.image_size is not None and not (_is_int(self.image_size) and self.image_size >= 8):
            raise VcdmError(f"data.image_size: got {self.image_size!r}, expected None or an integer >= 8")
        if self.channels not in (None, 1, 3) or isinstance(self.channels, bool):
            raise VcdmError(f"data.channels: got {self.channels!r}, expected None, 1 or 3")
        if self.limit is not None and not (_is_int(self.limit) and self.limit >= 1):
            raise VcdmError(f"data.limit: got {self.limit!r}, expected None or an integer >= 1")


def load_dataset(cfg: DataConfig) -> ImageData:
    """Load the images `cfg` describes.

    `cfg.source` "mnist" means the embedded dataset (a folder literally named mnist needs "./mnist"),
    "emoji", "emoji:google" or "emoji:twitter" the emoji images (fetched by `make emoji-data`); an
    existing folder is an image folder; a path ending in .npz is an .npz archive.

    Returns:
        ImageData with uint8 (N, C, H, W) images, N <= cfg.limit, and labels (captions) where the source
        has them.
    """
    from vcdm.data.emoji import emoji_vendors, load_emoji

    options = {"image_size": cfg.image_size, "channels": cfg.channels, "limit": cfg.limit}
    if cfg.source == "mnist":
        return load_mnist(cfg.split, **options)
    vendors = emoji_vendors(cfg.source)
    if vendors is not None:
        return load_emoji(vendors, cfg.split, **options)
    path = Path(cfg.source)
    if path.is_dir():
        return load_image_folder(path, **options)
    if path.suffix.lower() == ".npz":
        return load_npz(path, **options)
    if not path.exists():
        raise VcdmError(
            f"data.source: {path} does not exist (expected 'mnist', an image folder or an .npz file)"
        )
    raise VcdmError(
        f"data.source: {path} is a file but not an .npz archive (expected 'mnist' or a folder or .npz)"
    )
