"""Sampling parameters carried inside the PNGs vcdm writes: one iTXt chunk, keyword "vcdm", holding JSON.

`vcdm sample` and `vcdm serve` write it; `vcdm sample --from-png FILE` and the web page's drop zone read it
back to redraw the image. The chunk goes in just before IEND, so the pixels (and every other byte of the file
`save_png` wrote) are unchanged. The JSON is a flat dict: "vcdm" (the version), "run", "stage", "seed",
"num", and the sampling settings under their SampleConfig names ("num_steps", "sampler", "guidance",
"prior_num_steps", ...), plus "label" and "prompt" where the image had them.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

from PIL import Image

from vcdm import __version__
from vcdm.errors import VcdmError
from vcdm.fileio import atomic_write_bytes

KEY = "vcdm"  # the iTXt keyword
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# SampleConfig fields a PNG records, as they are named in the JSON
SAMPLE_FIELDS = ("num_steps", "sampler", "guidance", "prior_num_steps", "prior_sampler", "prior_guidance",
                 "upsampler_num_steps", "upsampler_sampler", "upsampler_guidance", "upsampler_aug_sigma")  # fmt: skip


def params(
    run: str | os.PathLike, stage: str, seed: int, sample: Any, *, cascade: bool = False, **extra: Any
) -> dict[str, Any]:
    """The parameters of one image (or a grid, with num=): the run, stage, first seed, the SampleConfig
    fields of SAMPLE_FIELDS (the upsampler's only for a cascade) and `extra` (label, prompt, num, part...;
    None values are left out)."""
    out: dict[str, Any] = {
        KEY: __version__,
        "run": str(Path(run).resolve()),
        "stage": stage,
        "seed": int(seed),
    }
    fields = [f for f in SAMPLE_FIELDS if cascade or not f.startswith("upsampler_")]
    out |= {f: getattr(sample, f) for f in fields if hasattr(sample, f)}
    out |= {k: v for k, v in extra.items() if v is not None}
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    # PNG spec 5.3: length, type, data, CRC-32 of type + data
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_params(png: bytes, meta: dict[str, Any]) -> bytes:
    """PNG bytes with the "vcdm" iTXt chunk set to JSON(meta) (an existing one is replaced)."""
    if not png.startswith(_SIGNATURE) or not png.endswith(_IEND):
        raise VcdmError("not a PNG file written in one piece (no signature or IEND at the end)")
    body, pos = [png[:8]], 8
    while pos < len(png) - len(_IEND):  # copy every chunk but an old vcdm iTXt
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        end = pos + 12 + length
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if not (kind == b"iTXt" and data.startswith(KEY.encode() + b"\x00")):
            body.append(png[pos:end])
        pos = end
    # iTXt (PNG spec 11.3.4.5): keyword, 0, compression flag 0, method 0, empty language, 0, empty key, 0, text
    text = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()
    body.append(_chunk(b"iTXt", KEY.encode() + b"\x00\x00\x00\x00\x00" + text))
    return b"".join(body) + _IEND


def write(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Add (or replace) the parameters chunk of a PNG file in place, atomically."""
    path = Path(path)
    atomic_write_bytes(path, with_params(path.read_bytes(), meta))


def read(source: str | os.PathLike | bytes) -> dict[str, Any]:
    """The parameters a PNG carries (a path or the file's bytes); VcdmError when it has none."""
    name = "the image" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            text = getattr(img, "text", {}).get(KEY)
    except (OSError, ValueError) as e:
        raise VcdmError(f"{name}: cannot read it as an image ({type(e).__name__}: {e})") from None
    if text is None:
        raise VcdmError(f"{name} carries no vcdm parameters (a PNG written by `vcdm sample` or `vcdm serve`)")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise VcdmError(f"{name}: its vcdm parameters are not JSON ({e})") from None
    if not isinstance(meta, dict) or "seed" not in meta:
        raise VcdmError(f"{name}: its vcdm parameters hold no seed")
    return meta


# `vcdm sample` flags (argparse dests) filled from a PNG's parameters
_SAMPLE_ARGS = {"num_steps": "steps", "sampler": "sampler", "guidance": "guidance", "prior_num_steps": "prior_steps",
                "prior_guidance": "prior_guidance", "upsampler_num_steps": "upsampler_steps",
                "upsampler_sampler": "upsampler_sampler", "upsampler_guidance": "upsampler_guidance",
                "upsampler_aug_sigma": "aug_sigma", "label": "label", "seed": "seed", "num": "num",
                "stage": "stage"}  # fmt: skip


def fill_sample_args(args: Any, meta: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Set the `vcdm sample` namespace from a PNG's parameters where the command line left a flag at its
    default (`defaults`: dest -> the parser's default); RUN from the PNG when none was given. num is 1 for an
    image, the grid's count for a grid."""
    if getattr(args, "run", None) is None:
        args.run = meta.get("run")
        if args.run is None:
            raise VcdmError("--from-png: the PNG names no run; give RUN")
    meta = {"num": 1} | meta
    for key, dest in _SAMPLE_ARGS.items():
        if key in meta and getattr(args, dest, None) == defaults.get(dest):
            setattr(args, dest, meta[key])
    args.prior_sampler = meta.get("prior_sampler")  # no flag of its own: `vcdm sample` reads it from here
