"""Run directories: resolving and saving a run's config, and guarding finished results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vcdm.config import RunConfig, apply_overrides, from_dict, load_config, preset, to_dict
from vcdm.errors import VcdmError
from vcdm.fileio import atomic_write_text


def resolve_config(
    run_dir: str | Path,
    *,
    preset_name: str = "mnist",
    config_file: str | None = None,
    overrides: list[str] = (),
) -> RunConfig:
    """The run's config: run_dir/config.json if it exists (else the preset), then --config, then --set.

    The result is saved back to run_dir/config.json (atomically) so the run directory always holds the
    resolved config that produced its contents.
    """
    path = Path(run_dir) / "config.json"
    if config_file is not None:
        cfg = load_config(config_file)
    elif path.is_file():
        cfg = load_config(path)
    else:
        cfg = preset(preset_name)
    cfg = apply_overrides(cfg, list(overrides))
    save_config(run_dir, cfg)
    return cfg


def save_config(run_dir: str | Path, cfg: RunConfig) -> None:
    atomic_write_text(Path(run_dir) / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")


def stage_done(stage_dir: str | Path, total_nimg: int) -> bool:
    """Whether a stage holds an export trained for at least total_nimg images."""
    meta_path = Path(stage_dir) / "model.json"
    if not meta_path.is_file():
        return False
    try:
        return int(json.loads(meta_path.read_text()).get("nimg", 0)) >= total_nimg
    except (json.JSONDecodeError, ValueError, TypeError):
        return False


def guard_output(path: str | Path, force: bool, what: str = "results") -> None:
    """Refuse to write into a directory that already holds files unless force; with force, clear it."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        if not force:
            raise VcdmError(
                f"{path} already holds {what}; pass --force to overwrite it, or choose another path"
            )
        shutil.rmtree(path)


__all__ = ["RunConfig", "from_dict", "guard_output", "resolve_config", "save_config", "stage_done"]
