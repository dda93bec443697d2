"""Run directories: the one module that knows their layout, and the one "already done / --force" guard.

    RUN/config.json                  the resolved RunConfig (data-derived fields filled in from the data)
    RUN/<stage>/checkpoints/         resumable training states (vcdm.training.checkpoint)
    RUN/<stage>/log.jsonl            the training log
    RUN/<stage>/model.safetensors    exported EMA weights
    RUN/<stage>/model.json           the export's meta: kind, network config, images seen, ...
    RUN/embeddings.safetensors       embeddings of the training set and their statistics
    RUN/samples/<stage>-seed<S>/     `vcdm sample` output (one PNG per seed + grid.png)
    RUN/edits/<command>/             `vcdm edit` output
    RUN/report.md                    the demo's report

Everything else asks this module for a path rather than spelling a file name.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vcdm.errors import VcdmError
from vcdm.fileio import atomic_write_text

if TYPE_CHECKING:  # config imports the training loop, which takes its file names from here
    from vcdm.config import RunConfig

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
META = "model.json"
CHECKPOINTS = "checkpoints"
EMBEDDINGS = "embeddings.safetensors"
REPORT = "report.md"


class RunDir:
    """Paths of one run directory (nothing is created until something is written)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def embeddings(self) -> Path:
        return self.path / EMBEDDINGS

    @property
    def report(self) -> Path:
        return self.path / REPORT

    def stage(self, directory: str) -> Path:
        """RUN/<directory>: a stage's checkpoints, log and export."""
        return self.path / directory

    def samples(self, stage: str, seed: int) -> Path:
        return self.path / "samples" / f"{stage}-seed{seed}"

    def edits(self, command: str) -> Path:
        return self.path / "edits" / command

    def stage_meta(self, directory: str) -> dict[str, Any] | None:
        """A stage's export meta (model.json), or None when it has no readable export."""
        return read_meta(self.stage(directory))

    def stage_done(self, directory: str, total_nimg: int) -> bool:
        """Whether a stage holds an export trained for at least total_nimg images."""
        return stage_done(self.stage(directory), total_nimg)

    def load_config(self) -> RunConfig:
        from vcdm.config import load_config

        if not self.config.is_file():
            raise VcdmError(f"{self.path}: not a run directory (no {CONFIG}); train a stage into it first")
        return load_config(self.config)

    def save_config(self, cfg: RunConfig) -> None:
        from vcdm.config import to_dict

        atomic_write_text(self.config, json.dumps(to_dict(cfg), indent=2) + "\n")


def read_meta(stage_dir: str | Path) -> dict[str, Any] | None:
    """The JSON meta of an export in stage_dir, or None when missing or unreadable."""
    try:
        meta = json.loads((Path(stage_dir) / META).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def stage_done(stage_dir: str | Path, total_nimg: int) -> bool:
    """Whether stage_dir holds an export trained for at least total_nimg images."""
    meta = read_meta(stage_dir)
    try:
        return meta is not None and int(meta.get("nimg", 0)) >= total_nimg
    except (ValueError, TypeError):
        return False


def guard(
    path: str | Path, done: bool, force: bool, what: str, redo: str = "overwrite it, or choose another path"
) -> None:
    """The one "already done" guard: refuse to redo finished work unless force; with force, remove it first.

    Args:
        path: the file or directory that holds the finished work.
        done: whether it is finished (a stage exported for its budget, a directory holding files, ...).
        force: the user asked to redo it (--force): the old file or directory is deleted.
        what: what it holds, for the message ("samples", "a model trained for 48000 images").
        redo: what --force does and what else the user can do, for the message.
    """
    path = Path(path)
    if not done:
        return
    if not force:
        raise VcdmError(f"{path} already holds {what}; pass --force to {redo}")
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def guard_output(path: str | Path, force: bool, what: str = "results") -> None:
    """Refuse to write into a directory that already holds files unless force; with force, clear it."""
    path = Path(path)
    guard(path, path.is_dir() and any(path.iterdir()), force, what)


def resolve_config(
    run_dir: str | Path,
    *,
    preset_name: str = "mnist",
    config_file: str | None = None,
    overrides: list[str] = (),
    save: bool = True,
) -> RunConfig:
    """The run's config: run_dir/config.json if it exists (else the preset), then --config, then --set.

    The result is saved back to run_dir/config.json (atomically) so the run directory always holds the
    config that produced its contents; commands that load the data save it again with the data-derived
    fields filled in (`vcdm.stages.resolve_for_data`).
    """
    from vcdm.config import apply_overrides, load_config, preset

    run = RunDir(run_dir)
    if config_file is not None:
        cfg = load_config(config_file)
    elif run.config.is_file():
        cfg = load_config(run.config)
    else:
        cfg = preset(preset_name)
    cfg = apply_overrides(cfg, list(overrides))
    if save:
        run.save_config(cfg)
    return cfg


def save_config(run_dir: str | Path, cfg: RunConfig) -> None:
    RunDir(run_dir).save_config(cfg)


def num_params(stage_dir: str | Path) -> int:
    """The number of parameters of a stage's export (read from the weights file's header)."""
    from safetensors import safe_open

    with safe_open(str(Path(stage_dir) / WEIGHTS), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


__all__ = [
    "CHECKPOINTS",
    "CONFIG",
    "EMBEDDINGS",
    "META",
    "REPORT",
    "WEIGHTS",
    "RunDir",
    "guard",
    "guard_output",
    "num_params",
    "read_meta",
    "resolve_config",
    "save_config",
    "stage_done",
]
