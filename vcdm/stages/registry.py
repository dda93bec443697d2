"""The stage registry: every trainable kind of model declares itself once, and one path trains, exports and
loads them all.

A *stage kind* says, in one place (a `StageKind`):
    - where its training config lives in the RunConfig (`train_path`, e.g. "decoder.train"),
    - how it fills the data-derived fields of the config (`resolve`: image size, channels, classes, ...),
    - what it trains on and how (`prepare`: the export meta, the training tensors, the task for the loop),
    - how its network is built from that meta (`build`), at training time and when loading an export.

Every kind is exported the same way: RUN/<directory>/model.safetensors (EMA weights) + model.json (meta with
"kind", the network config, images seen). Because the model is always built from the meta, an export can
always be loaded back (`load_model`). docs/architecture.md shows how to add a kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vcdm.config import RunConfig
from vcdm.data import ImageData
from vcdm.errors import VcdmError
from vcdm.runs import WEIGHTS, RunDir
from vcdm.seeding import mix_seed
from vcdm.training import TrainConfig, TrainResult, train
from vcdm.training import distributed as dist
from vcdm.training.checkpoint import load_export, load_state_dict_checked, save_export
from vcdm.training.loop import Task


@dataclass
class Prepared:
    """What one training run of a stage needs: the export meta, the training tensors and the task."""

    meta: dict[str, Any]  # JSON-able; `build(meta | {"kind": ...})` must rebuild the network
    tensors: dict[str, torch.Tensor]  # equal-length tensors the loop draws batches from ("image", "emb", ...)
    task: Task  # task.loss(model, batch, generator) -> (B,)


@dataclass(frozen=True)
class StageKind:
    """One kind of trainable stage.

    Attributes:
        name: the registry key, `vcdm train NAME`, and the "kind" of its exports.
        summary: one line for `vcdm train --help`.
        train_path: dotted path of its TrainConfig in the RunConfig ("decoder.train").
        prepare: (resolved config, data, run) -> Prepared. Raises VcdmError for unusable data or config.
        build: export meta -> untrained network (the same module at training and loading time).
        init_stream: the initial weights come from torch.manual_seed(mix_seed(train.seed, init_stream)).
        directory: its folder in the run directory (default: name).
        role: what the pipeline may use it as: "embedder", "prior", "image" (a denoiser of images),
            "classifier", or "other".
        resolve: (config, data, run) -> config with this kind's data-derived fields filled in, or None.
        finish: (trained EMA model, config, data, run) -> extra export meta measured on the trained model
            (e.g. the autoencoder's latent scale factor), or None.
    """

    name: str
    summary: str
    train_path: str
    prepare: Callable[[RunConfig, ImageData, RunDir], Prepared]
    build: Callable[[dict[str, Any]], nn.Module]
    init_stream: int
    directory: str | None = None
    role: str = "other"
    resolve: Callable[[RunConfig, ImageData, RunDir], RunConfig] | None = None
    finish: Callable[[nn.Module, RunConfig, ImageData, RunDir], dict[str, Any]] | None = None

    @property
    def folder(self) -> str:
        return self.directory or self.name

    def train_config(self, cfg: RunConfig) -> TrainConfig:
        node: Any = cfg
        for part in self.train_path.split("."):
            node = getattr(node, part)
        return node


KINDS: dict[str, StageKind] = {}
ALIASES: dict[str, str] = {}  # kinds written by older versions into model.json


def register(kind: StageKind, *, aliases: tuple[str, ...] = ()) -> StageKind:
    """Add a stage kind to the registry (replacing one of the same name)."""
    KINDS[kind.name] = kind
    ALIASES.update(dict.fromkeys(aliases, kind.name))
    return kind


def get_kind(name: str) -> StageKind:
    """The registered kind `name`; a VcdmError lists the kinds when there is none."""
    name = ALIASES.get(name, name)
    if name not in KINDS:
        raise VcdmError(f"unknown stage kind {name!r}; registered kinds: {', '.join(KINDS)}")
    return KINDS[name]


def resolve_for_data(
    cfg: RunConfig, data: ImageData, run: RunDir | str | Path, kinds: list[str] | None = None
) -> RunConfig:
    """The config with the data-derived fields (image size, channels, classes, embedding size) of every
    kind (or of `kinds`) filled in from the data and the run, then checked: what config.json records is what
    gets built."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    for kind in KINDS.values() if kinds is None else map(get_kind, kinds):
        if kind.resolve is not None:
            cfg = kind.resolve(cfg, data, run)
    return cfg


def train_stage(
    name: str,
    run_dir: str | Path,
    cfg: RunConfig,
    data: ImageData,
    *,
    progress: bool = True,
    save_config: bool = True,
) -> TrainResult:
    """Train stage kind `name` into RUN/<its directory> (resuming from its last checkpoint) and export it.

    Args:
        name: a registered kind (`KINDS`).
        run_dir: the run directory.
        cfg: the run config; its data-derived fields are resolved from `data` first.
        data: the training images (uint8) with optional labels.
        progress: show a progress bar.
        save_config: write the resolved config to RUN/config.json (rank 0); every kind's data-derived fields
            are resolved then, only this kind's otherwise.
    Returns:
        the TrainResult; `.ema` is the exported model.
    """
    kind = get_kind(name)
    run = RunDir(run_dir)
    cfg = resolve_for_data(cfg, data, run, None if save_config else [kind.name])
    if save_config and dist.rank() == 0:
        run.save_config(cfg)
    prep = kind.prepare(cfg, data, run)
    meta = {"kind": kind.name, **prep.meta}
    train_cfg = kind.train_config(cfg)
    with torch.random.fork_rng(devices=[]):  # the initial weights depend on (seed, kind) only
        torch.manual_seed(mix_seed(train_cfg.seed, kind.init_stream))
        model = kind.build(meta)
    out = run.stage(kind.folder)
    res = train(model, prep.task, prep.tensors, train_cfg, out, meta=meta, progress=progress, desc=kind.name)
    if dist.rank() == 0:
        extra = kind.finish(res.ema, cfg, data, run) if kind.finish is not None else {}
        save_export(out, res.ema, meta | extra | {"nimg": res.nimg, "seconds": res.seconds})
    dist.barrier()
    return res


def build_from_meta(meta: dict[str, Any]) -> nn.Module:
    """An untrained model of the kind and architecture an export's meta describes."""
    return get_kind(str(meta.get("kind"))).build(meta)


def load_model(
    stage_dir: str | Path, expect: str | tuple[str, ...] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load an export (EMA weights + JSON meta) from a stage directory: (model in eval mode, frozen; meta).

    Args:
        stage_dir: e.g. RUN/decoder.
        expect: a kind name, or a role ("image", "prior", ...), or a tuple of them; None accepts any kind.
    """
    stage_dir = Path(stage_dir)
    state, meta = load_export(stage_dir)
    kind = get_kind(str(meta.get("kind")))
    if expect is not None:
        wanted = (expect,) if isinstance(expect, str) else expect
        if kind.name not in wanted and kind.role not in wanted:
            raise VcdmError(
                f"{stage_dir}: holds a {kind.name!r} model, expected a {' or '.join(map(repr, wanted))} model"
            )
    model = kind.build(meta)
    load_state_dict_checked(model, state, stage_dir / WEIGHTS)
    return model.eval().requires_grad_(False), meta
