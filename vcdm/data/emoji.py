"""Emoji: 64x64 RGB images with captions, from the npm packages of the emoji-datasource project (iamcal).

Sources (`data.source`): "emoji" (both vendors, Google's images first, then Twitter's), "emoji:google",
"emoji:twitter". Each vendor has ~3,790 images: every emoji of `emoji.json` plus its skin-tone variants.

- Labels: the 10 categories of emoji.json, always indexed in the sorted order of `CATEGORIES` (fixed, so
  that class indices never depend on which images a split holds).
- Captions: the lower-cased Unicode name, plus the skin tone(s) of a variant ("waving hand sign, medium
  skin tone"; two-person variants name both tones).
- Images: the 64px PNGs, alpha-composited onto white, RGB, resized (Lanczos, antialiased) to image_size.
- Splits: "test" holds the emoji whose lower-cased name hashes (SHA-256) into the first 10% of the range,
  "train" the rest. The hash only sees the name, so the held-out set is the same for both vendors and on
  every machine, and a skin-tone variant always goes where its base emoji goes.

Image licences: Google's (Noto) images are under the Apache License 2.0; Twitter's (twemoji) under
CC-BY 4.0, Copyright Twitter, Inc. and other contributors. emoji.json is MIT (Cal Henderson).

Fetching is a set-up step, never done by the library at run time: `make emoji-data` (or
`python -m vcdm.data.emoji`) runs `npm pack` for each package in a temp dir, checks the tarball against
its recorded SHA-256, and unpacks emoji.json and the 64px PNGs into the data cache (vcdm.fileio.cache_dir) as
`emoji/<vendor>-<version>/`, atomically (unpacked beside it, then renamed). Decoding the PNGs takes a
while, so the decoded uint8 arrays are cached there per (vendor, size) too, as an .npz.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vcdm.data.images import ImageData, conform_array
from vcdm.errors import VcdmError, exit_status
from vcdm.fileio import atomic_write_bytes, atomic_write_text
from vcdm.fileio import cache_dir as vcdm_cache_dir

VERSION = "16.0.0"
VENDORS = ("google", "twitter")
PACKAGES = {"google": "emoji-datasource-google", "twitter": "emoji-datasource-twitter"}
# SHA-256 of the tarballs `npm pack <package>@16.0.0` downloads (the registry's published files).
PACKAGE_SHA256 = {
    "google": "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    "twitter": "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
}
IMAGE_LICENSES = {
    "google": "Apache License 2.0 (Google Noto emoji)",
    "twitter": "CC-BY 4.0, Copyright Twitter, Inc. and other contributors (twemoji)",
}
SPLITS = ("train", "test")
HELDOUT_FRACTION = 0.1
CATEGORIES = (
    "Activities",
    "Animals & Nature",
    "Component",
    "Flags",
    "Food & Drink",
    "Objects",
    "People & Body",
    "Smileys & Emotion",
    "Symbols",
    "Travel & Places",
)
SKIN_TONES = {
    "1F3FB": "light skin tone",
    "1F3FC": "medium-light skin tone",
    "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone",
    "1F3FF": "dark skin tone",
}
NATIVE_SIZE = 64
FETCH_HINT = "`make emoji-data` (or `python -m vcdm.data.emoji`)"
_SOURCES = ("emoji", *(f"emoji:{v}" for v in VENDORS))
_CACHE_VERSION = 1  # bump when _decode changes, so stale caches are not read
_WHITE = (255, 255, 255, 255)

Pack = Callable[[str, Path], Path]  # (package spec "name@version", empty folder) -> the tarball written there


@dataclass(frozen=True)
class _Entry:
    file: str  # PNG file name in img/
    name: str  # lower-cased name of the base emoji (decides the split)
    caption: str
    label: int  # index into CATEGORIES


# ---------------------------------------------------------------------------------------------- sources


def emoji_vendors(source: str) -> tuple[str, ...] | None:
    """The vendors a `data.source` names ("emoji" -> both), or None when it is not an emoji source.

    Raises:
        VcdmError: "emoji:<something>" with an unknown vendor.
    """
    if source == "emoji":
        return VENDORS
    if not source.startswith("emoji:"):
        return None
    vendor = source.split(":", 1)[1]
    if vendor not in VENDORS:
        raise VcdmError(
            f"data.source: unknown emoji vendor {vendor!r}, expected one of {', '.join(_SOURCES)}"
        )
    return (vendor,)


def _check_vendors(vendors: str | Iterable[str]) -> tuple[str, ...]:
    vendors = (vendors,) if isinstance(vendors, str) else tuple(vendors)
    bad = [v for v in vendors if v not in VENDORS]
    if bad or not vendors:
        raise VcdmError(
            f"emoji vendor: got {bad[0] if bad else 'none'!r}, expected one of {', '.join(VENDORS)}"
        )
    return tuple(dict.fromkeys(vendors))  # in the given order, without repeats


def is_heldout(name: str) -> bool:
    """Whether the emoji called `name` (any case) is in the held-out "test" split (~HELDOUT_FRACTION)."""
    digest = hashlib.sha256(name.lower().encode()).digest()
    return int.from_bytes(digest[:8], "big") < HELDOUT_FRACTION * 2**64


def emoji_split(name: str) -> str:
    """ "test" for a held-out emoji name, else "train"."""
    return "test" if is_heldout(name) else "train"


def dataset_dir(vendor: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where `fetch_emoji` unpacks a vendor's images: <cache>/emoji/<vendor>-<VERSION>/."""
    return Path(cache_dir or vcdm_cache_dir()) / "emoji" / f"{vendor}-{VERSION}"


# ---------------------------------------------------------------------------------------------- fetching


def npm_pack(spec: str, dest: Path) -> Path:
    """Download the tarball of `spec` ("name@version") into the folder `dest` with `npm pack`."""
    npm = shutil.which("npm")
    if npm is None:
        raise VcdmError(f"npm not found: fetching {spec} needs npm (Node.js) on the PATH")
    result = subprocess.run(
        [npm, "pack", spec, "--ignore-scripts", "--silent"], cwd=dest, capture_output=True, text=True
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()] or ["(no message)"]
        raise VcdmError(f"npm pack {spec} failed (exit {result.returncode}): {lines[-1].strip()}")
    tarballs = sorted(dest.glob("*.tgz"))
    if len(tarballs) != 1:
        raise VcdmError(f"npm pack {spec}: expected one .tgz in {dest}, found {len(tarballs)}")
    return tarballs[0]


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _unpack(tarball: Path, vendor: str, spec: str, out: Path) -> int:
    """Write emoji.json and the 64px PNGs of `tarball` into `out` (flat img/); returns the PNG count."""
    prefix = f"package/img/{vendor}/64/"
    (out / "img").mkdir()
    count, has_json = 0, False
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if name == "package/emoji.json" and member.isfile():
                    target, has_json = out / "emoji.json", True
                elif name.startswith(prefix) and name.endswith(".png") and member.isfile():
                    file = name[len(prefix) :]
                    if "/" in file or file.startswith("."):
                        continue
                    target, count = out / "img" / file, count + 1
                else:
                    continue
                with archive.extractfile(member) as stream:
                    target.write_bytes(stream.read())
    except (tarfile.TarError, OSError, EOFError) as e:
        raise VcdmError(f"{spec}: cannot unpack {tarball.name} ({type(e).__name__}: {e})") from e
    if not has_json or count == 0:
        raise VcdmError(f"{spec}: the tarball lacks package/emoji.json or PNGs under {prefix}")
    return count


def fetch_emoji(
    vendors: str | Iterable[str] = VENDORS,
    cache_dir: str | os.PathLike | None = None,
    *,
    pack: Pack | None = None,
    checksums: Mapping[str, str] | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Fetch and unpack the emoji images of `vendors` into the data cache (a set-up step; see the module doc).

    Args:
        vendors: "google", "twitter" or several.
        cache_dir: None = vcdm's data cache ($VCDM_CACHE_DIR, else $XDG_CACHE_HOME/vcdm, else ~/.cache/vcdm).
        pack: writes the tarball of a spec into a folder and returns its path; default `npm_pack`.
        checksums: expected SHA-256 per vendor; default PACKAGE_SHA256 (only tests pass others).
        force: fetch again even when the images are already there.

    Returns:
        {vendor: the folder holding emoji.json and img/*.png}.
    """
    pack = pack or npm_pack
    checksums = PACKAGE_SHA256 if checksums is None else checksums
    out = {}
    for vendor in _check_vendors(vendors):
        final = dataset_dir(vendor, cache_dir)
        if final.is_dir() and not force:
            out[vendor] = final
            continue
        spec = f"{PACKAGES[vendor]}@{VERSION}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VcdmError(f"{final.parent}: cannot create the data cache ({e.strerror or e})") from e
        with tempfile.TemporaryDirectory(prefix="vcdm-npm-") as download:
            tarball = Path(pack(spec, Path(download)))
            digest = _sha256(tarball)
            if digest != checksums[vendor]:
                raise VcdmError(
                    f"{spec}: tarball SHA-256 is {digest}, expected {checksums[vendor]} "
                    "(corrupt download or a changed package); nothing was unpacked"
                )
            # Unpack beside the final folder (same file system), then rename: it appears whole or not at all.
            staging = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")
            staging.mkdir(0o777)  # the umask applies, as for a plain mkdir (mkdtemp's would be 0700)
            try:
                count = _unpack(tarball, vendor, spec, staging)
                _read_entries(staging, vendor)  # emoji.json parses and names only images that are there
                atomic_write_text(
                    staging / "SOURCE.txt",
                    f"{spec} (npm), tarball SHA-256 {digest}\n{count} PNGs from package/img/{vendor}/64/\n"
                    f"Image licence: {IMAGE_LICENSES[vendor]}\nemoji.json: MIT, Copyright (c) 2013 Cal Henderson\n",
                )
                if final.is_dir() and force:
                    old = final.with_name(f".{final.name}.old-{secrets.token_hex(6)}")
                    os.rename(final, old)
                    shutil.rmtree(old, ignore_errors=True)
                if not final.is_dir():  # else another process got there first: keep its copy
                    os.rename(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        out[vendor] = final
    return out


# ----------------------------------------------------------------------------------------------- loading


def _caption(name: str, tones: str | None = None) -> str:
    if not tones:
        return name
    names = [SKIN_TONES.get(code) for code in dict.fromkeys(tones.split("-"))]
    if None in names:
        raise ValueError(f"unknown skin tone {tones!r}")
    return ", ".join([name, *names])


def _read_entries(root: Path, vendor: str) -> list[_Entry]:
    """Every image of `vendor` listed in root/emoji.json, in file order (each emoji, then its variants)."""
    path = root / "emoji.json"
    has_img = f"has_img_{vendor}"
    try:
        entries = []
        for item in json.loads(path.read_text(encoding="utf-8")):
            if item["category"] not in CATEGORIES:
                raise ValueError(f"unknown category {item['category']!r} of {item['name']!r}")
            name, label = item["name"].lower(), CATEGORIES.index(item["category"])
            if item.get(has_img, True):
                entries.append(_Entry(item["image"], name, _caption(name), label))
            for tones, variant in (item.get("skin_variations") or {}).items():
                if variant.get(has_img, True):
                    entries.append(_Entry(variant["image"], name, _caption(name, tones), label))
    except OSError as e:
        raise VcdmError(f"{path}: cannot read ({e.strerror or e}); fetch it again with {FETCH_HINT}") from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise VcdmError(f"{path}: not the expected emoji.json ({type(e).__name__}: {e})") from e
    missing = [e.file for e in entries if "/" in e.file or not (root / "img" / e.file).is_file()]
    if missing:
        raise VcdmError(
            f"{root}: emoji.json names {len(missing)} image(s) missing from img/ (first: {missing[0]}); "
            f"fetch it again with {FETCH_HINT}"
        )
    return entries


def _decode(root: Path, files: list[str], size: int) -> np.ndarray:
    """The PNGs as uint8 (N, 3, size, size): composited onto white, RGB, Lanczos-resized."""
    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    for i, file in enumerate(files):
        path = root / "img" / file
        try:
            with Image.open(path) as img:
                rgba = img.convert("RGBA")  # also turns palette transparency and gray+alpha into RGBA
        except Exception as e:  # PIL raises many types on bad data
            raise VcdmError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
        rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
        out[i] = np.asarray(rgb).transpose(2, 0, 1)
    return out


def _decoded(root: Path, vendor: str, files: list[str], size: int, cache: Path) -> np.ndarray:
    """`_decode`, read from / written to the on-disk cache (checked against the file list it was made from)."""
    cache_file = cache / "emoji" / f"{vendor}-{VERSION}-{size}px-v{_CACHE_VERSION}.npz"
    with contextlib.suppress(Exception):  # missing or corrupt: decode again and rewrite it
        with open(cache_file, "rb") as stream, np.load(stream, allow_pickle=False) as archive:
            images, cached_files = archive["images"], archive["files"]
        if (
            images.dtype == np.uint8
            and images.shape == (len(files), 3, size, size)
            and cached_files.tolist() == files
        ):
            return images
    images = _decode(root, files, size)
    buffer = io.BytesIO()
    np.savez(buffer, images=images, files=np.array(files, dtype=str))
    try:
        atomic_write_bytes(cache_file, buffer.getvalue())
    except VcdmError as e:
        warnings.warn(f"emoji cache not written (later runs decode again): {e}", stacklevel=3)
    return images


def load_emoji(
    vendors: str | Iterable[str] = VENDORS,
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    limit: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ImageData:
    """Load a split of the emoji images (fetched beforehand with `make emoji-data`; never downloads).

    Args:
        vendors: "google", "twitter" or both (the default; Google's images come first).
        split: "train" (~90%) or "test" (the held-out ~10%, see `is_heldout`).
        image_size: None keeps the native 64x64; else resize (Lanczos) to image_size x image_size.
        channels: None or 3 keeps RGB; 1 converts to gray.
        limit: keep only the first `limit` images (None = all).
        cache_dir: None = vcdm's data cache (where `fetch_emoji` unpacked the images).

    Returns:
        ImageData with uint8 (N, C, H, W) images, int64 labels indexing CATEGORIES, and captions.
    """
    vendors = _check_vendors(vendors)
    if split not in SPLITS:
        raise VcdmError(
            f"data.split: got {split!r}, expected one of {', '.join(SPLITS)} for the emoji dataset"
        )
    if image_size is not None and not (isinstance(image_size, int) and image_size >= 1):
        raise VcdmError(f"data.image_size: got {image_size!r}, expected None or a positive integer")
    cache = Path(cache_dir or vcdm_cache_dir())
    images, labels, captions = [], [], []
    for vendor in vendors:
        root = dataset_dir(vendor, cache)
        if not (root / "emoji.json").is_file():
            raise VcdmError(
                f"the emoji images ({vendor}) are not in {root}; fetch them once with {FETCH_HINT}"
            )
        entries = _read_entries(root, vendor)
        keep = [i for i, e in enumerate(entries) if emoji_split(e.name) == split]
        images.append(
            _decoded(root, vendor, [e.file for e in entries], image_size or NATIVE_SIZE, cache)[keep]
        )
        labels += [entries[i].label for i in keep]
        captions += [entries[i].caption for i in keep]
    pixels = np.ascontiguousarray(conform_array(np.concatenate(images)[:limit], None, channels))
    name = "emoji" if vendors == VENDORS else f"emoji:{':'.join(vendors)}"
    return ImageData(
        torch.from_numpy(pixels),
        torch.tensor(labels[:limit], dtype=torch.int64),
        CATEGORIES,
        f"{name}:{split}",
        captions=captions[:limit],
    )


# -------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """`python -m vcdm.data.emoji [VENDOR ...] [--force]`: fetch the emoji images into the data cache."""
    parser = argparse.ArgumentParser(
        prog="python -m vcdm.data.emoji",
        description="Fetch the emoji images (npm pack, SHA-256 checked) into vcdm's data cache.",
    )
    parser.add_argument(
        "vendors", nargs="*", metavar="VENDOR", help=f"{' or '.join(VENDORS)} (default: both)"
    )
    parser.add_argument("--force", action="store_true", help="fetch again even when already there")
    args = parser.parse_args(argv)

    def fetch() -> None:
        for vendor in _check_vendors(args.vendors or VENDORS):
            start = time.perf_counter()
            present = dataset_dir(vendor).is_dir() and not args.force
            print(f"{PACKAGES[vendor]}@{VERSION}: {'already fetched' if present else 'fetching'}", flush=True)
            path = fetch_emoji(vendor, force=args.force)[vendor]
            if not present:
                count = len(list((path / "img").iterdir()))
                print(f"  {count} images in {path} ({time.perf_counter() - start:.1f} s)", flush=True)

    return exit_status(fetch)


if __name__ == "__main__":
    sys.exit(main())
