"""Helpers shared by the verbs of `vcdm`: config arguments, reading image files, small checks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vcdm.errors import VcdmError

if TYPE_CHECKING:  # torch loads inside the handlers, after vcdm.cli.main has set OMP_WAIT_POLICY
    from torch import Tensor

    from vcdm.config import RunConfig

EPILOG = """config: every run directory holds config.json (the resolved RunConfig). Change any field with
--set field.path=value (repeatable; values are JSON, e.g. --set decoder.train.total_nimg=200000
--set decoder.net.channel_mults=[1,2,2] --set data.source=path/to/folder). `vcdm config --preset mnist`
prints every field with its default."""


def add_verb(sub: Any, name: str, help: str, description: str, *, epilog: str | None = EPILOG):
    """A verb's parser with the house formatting (raw descriptions, the config epilog)."""
    return sub.add_parser(name, help=help, description=description, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip


def add_config_args(p: argparse.ArgumentParser) -> None:
    """--preset, --config, --set and --no-progress."""
    p.add_argument("--preset", default="mnist", help="named config to start a new run from: mnist (the demo "
                   "default), tiny (seconds-long smoke runs), emoji (the RGB cascade), emoji-text (text to image). "
                   "Default: mnist")  # fmt: skip
    p.add_argument(
        "--config", metavar="FILE", help="a JSON config file (a partial one is completed with defaults)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one config field, e.g. --set decoder.train.lr=1e-3 (repeatable)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_config(args: argparse.Namespace, run: str | Path) -> RunConfig:
    """The run's config from RUN/config.json (or --preset / --config) and --set; saved back to the run."""
    from vcdm.runs import resolve_config

    return resolve_config(run, preset_name=args.preset, config_file=args.config, overrides=args.overrides)


def fresh_config(args: argparse.Namespace) -> RunConfig:
    """A config from --config or --preset, then --set (for commands that do not read a run)."""
    from vcdm.config import apply_overrides, load_config, preset

    cfg = load_config(args.config) if args.config else preset(args.preset)
    return apply_overrides(cfg, args.overrides)


def positive(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise VcdmError(f"{name} must be >= {minimum}, got {value}")


def read_images(paths: list[str], image_shape: tuple[int, int, int]) -> Tensor:
    """Read image files and conform them to (C, H, W) = image_shape: float32 in [-1, 1] (N, C, H, W)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from vcdm.data.images import conform_image, to_l_or_rgb

    c, h, _ = image_shape
    out = []
    for path in paths:
        try:
            with Image.open(path) as img:
                out.append(conform_image(to_l_or_rgb(img), h, c))
        except FileNotFoundError:
            raise VcdmError(f"{path}: image file not found") from None
        except (UnidentifiedImageError, OSError) as e:
            raise VcdmError(f"{path}: not a readable image ({e})") from None
    return torch.from_numpy(np.stack(out)).float() / 127.5 - 1
