"""Two checkpoint kinds (docs/architecture.md, "Run directories and checkpoints"), both safetensors + JSON, never pickles.

- training state (resumable): model, EMA, optimiser tensors and the loop's counters, in
  `<run>/checkpoints/state-<nimg>.safetensors`, with the config and counters as JSON metadata;
- export: EMA weights `<run>/model.safetensors` + `<run>/model.json` (kind, config, vcdm version), from which
  the model is rebuilt.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from vcdm import __version__
from vcdm.errors import VcdmError
from vcdm.fileio import atomic_write_bytes, atomic_write_text
from vcdm.runs import CHECKPOINTS, META, WEIGHTS

STATE_RE = re.compile(r"^state-(\d{12})\.safetensors$")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        tensors = load(path.read_bytes())
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise VcdmError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    return tensors, meta


# ---- training state ----


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, sd["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        _, idx, k = key.split(".", 2)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": groups}


def save_training_state(
    run_dir: str | Path,
    *,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    counters: dict[str, Any],
    meta: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
    keep: int = 2,
) -> Path:
    """Write a resumable checkpoint atomically and delete all but the newest `keep`.

    counters must hold "nimg". meta is the JSON-able description of what is trained (checked on resume).
    """
    ckpt_dir = Path(run_dir) / CHECKPOINTS
    opt_tensors, groups = _flatten_optimizer(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    tensors |= opt_tensors
    tensors |= {f"extra.{k}": v for k, v in (extra or {}).items()}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {"counters": counters, "meta": meta, "param_groups": groups, "vcdm": __version__}
    path = ckpt_dir / f"state-{int(counters['nimg']):012d}.safetensors"
    atomic_write_bytes(path, save(tensors, metadata={"vcdm": json.dumps(header)}))
    for old in list_training_states(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_training_states(run_dir: str | Path) -> list[Path]:
    """Complete training-state files in the run, oldest first (temp files from interrupted writes ignored)."""
    ckpt_dir = Path(run_dir) / CHECKPOINTS
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if STATE_RE.match(p.name))


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a training state: {"model", "ema", "optimizer", "extra", "counters", "meta"}."""
    path = Path(path)
    tensors, file_meta = _read_safetensors(path)
    try:
        header = json.loads(file_meta["vcdm"])
    except (KeyError, json.JSONDecodeError):
        raise VcdmError(f"{path}: not a vcdm training state (no vcdm metadata)") from None
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}, "extra": {}}
    for k, v in tensors.items():
        head, rest = k.split(".", 1)
        parts[head][rest if head != "optim" else k] = v
    return {
        "model": parts["model"],
        "ema": parts["ema"],
        "optimizer": _unflatten_optimizer(parts["optim"], header["param_groups"]),
        "extra": parts["extra"],
        "counters": header["counters"],
        "meta": header["meta"],
    }


def load_state_dict_checked(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """load_state_dict(strict) with a one-line VcdmError naming the file and the first mismatches."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
              for k in own if k in state and state[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}")
        raise VcdmError(f"{source}: weights do not fit this architecture: {'; '.join(parts)}")
    module.load_state_dict(state)


# ---- export ----


def save_export(out_dir: str | Path, module: nn.Module, meta: dict[str, Any]) -> Path:
    """Write `<out_dir>/model.safetensors` (weights) and `model.json` (meta + vcdm version), atomically."""
    out_dir = Path(out_dir)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write_bytes(out_dir / WEIGHTS, save(tensors))
    atomic_write_text(out_dir / META, json.dumps({**meta, "vcdm": __version__}, indent=2) + "\n")
    return out_dir / WEIGHTS


def load_export(out_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an export: (state_dict, meta). Errors name the missing or broken file."""
    out_dir = Path(out_dir)
    weights, config = out_dir / WEIGHTS, out_dir / META
    for p in (weights, config):
        if not p.is_file():
            raise VcdmError(f"{p}: missing; expected an exported model (weights .safetensors + .json config)")
    try:
        meta = json.loads(config.read_text())
    except json.JSONDecodeError as e:
        raise VcdmError(f"{config}: not valid JSON ({e.msg} at line {e.lineno})") from None
    tensors, _ = _read_safetensors(weights)
    return tensors, meta
