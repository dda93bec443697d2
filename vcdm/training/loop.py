"""The one training loop, shared by every stage (embedder, prior, decoder, classifier).

What is trained is given by a *task*: `task.loss(model, batch, generator) -> (B,)`. Everything is counted
in images seen (docs/architecture.md, "Seeds and resume"), and all randomness derives from (seed, images seen, micro-batch), so a run
resumed from a checkpoint continues exactly, and the result does not depend on the number of processes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from vcdm.errors import VcdmError
from vcdm.seeding import DATA_ORDER, mix_seed
from vcdm.training import distributed as dist
from vcdm.training.checkpoint import (
    list_training_states,
    load_state_dict_checked,
    load_training_state,
    save_training_state,
)
from vcdm.training.ema import EMA, ema_beta

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128  # global batch (images per optimiser step, over all processes)
    micro_batches: int = 1  # the global batch is split into this many chunks (gradient accumulation;
    # under torchrun each process takes micro_batches / world_size of them)
    total_nimg: int = 100_000  # training budget in images seen
    max_seconds: float | None = None  # optional wall-clock budget (stops early; None = no limit)
    lr: float = 2e-3  # AdamW peak learning rate
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW betas
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    warmup_nimg: int = 10_000  # linear learning-rate warm-up, in images
    grad_clip: float | None = 1.0  # clip the global gradient norm (None = off)
    ema_halflife_nimg: float = 10_000  # EMA half-life in images (EDM)
    ema_rampup: float | None = (
        0.05  # half-life = min(ema_halflife_nimg, ema_rampup * images seen); None = off
    )
    precision: str = "bf16"  # "fp32" | "bf16" (autocast, CPU or CUDA) | "fp16" (autocast, CUDA only)
    checkpoint_every_nimg: int = 25_000  # write a resumable training state this often (and at the end)
    keep_checkpoints: int = 2  # keep the newest N training states
    log_every_nimg: int = 5_000  # append a line to log.jsonl this often
    seed: int = 0  # all randomness derives from (seed, images seen, micro-batch index)

    def __post_init__(self):
        _check(self.batch_size >= 1, "train.batch_size", "an integer >= 1", self.batch_size)
        _check(self.micro_batches >= 1, "train.micro_batches", "an integer >= 1", self.micro_batches)
        _check(self.batch_size % self.micro_batches == 0, "train.batch_size",
               f"a multiple of train.micro_batches ({self.micro_batches})", self.batch_size)  # fmt: skip
        _check(self.total_nimg >= 1, "train.total_nimg", "an integer >= 1", self.total_nimg)
        _check(self.lr > 0, "train.lr", "a positive number", self.lr)
        _check(self.warmup_nimg >= 0, "train.warmup_nimg", "an integer >= 0", self.warmup_nimg)
        _check(
            self.ema_halflife_nimg > 0, "train.ema_halflife_nimg", "a positive number", self.ema_halflife_nimg
        )
        _check(self.precision in PRECISIONS, "train.precision", f"one of {PRECISIONS}", self.precision)
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", "an integer >= 1", self.keep_checkpoints)
        _check(self.checkpoint_every_nimg >= 1, "train.checkpoint_every_nimg", "an integer >= 1",
               self.checkpoint_every_nimg)  # fmt: skip
        _check(self.max_seconds is None or self.max_seconds > 0, "train.max_seconds", "positive or null",
               self.max_seconds)  # fmt: skip


def _check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise VcdmError(f"{name} must be {expected}, got {got!r}")


class Task(Protocol):
    def loss(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor: ...


@dataclass
class TrainResult:
    nimg: int  # images seen at the end
    seconds: float  # training wall-clock time over all sessions of this run
    losses: list[float] = field(default_factory=list)  # mean loss of every optimiser step, from the start
    ema: nn.Module | None = None  # the EMA model (what gets exported)
    stopped_early: str | None = None  # "max_seconds" when the wall-clock budget ended the run

    @property
    def images_per_second(self) -> float:
        return self.nimg / max(self.seconds, 1e-9)


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C / SIGTERM once a checkpoint has been written."""

    def __init__(self, checkpoint: Path, signum: int):
        super().__init__(f"interrupted by signal {signum}; checkpoint written to {checkpoint}")
        self.checkpoint = checkpoint
        self.signum = signum


def learning_rate(cfg: TrainConfig, nimg: int) -> float:
    """Peak lr with a linear warm-up over cfg.warmup_nimg images."""
    if cfg.warmup_nimg <= 0:
        return cfg.lr
    return cfg.lr * min(1.0, (nimg + cfg.batch_size) / cfg.warmup_nimg)


def batch_indices(num: int, nimg: int, batch: int, seed: int) -> Tensor:
    """Dataset indices of the global batch that starts at image count `nimg`.

    Each epoch e is a permutation drawn from (seed, e); a batch may straddle two epochs.
    """
    parts, pos, need = [], nimg, batch
    while need > 0:
        epoch, offset = divmod(pos, num)
        take = _epoch_permutation(num, seed, epoch)[offset : offset + need]
        parts.append(take)
        pos += len(take)
        need -= len(take)
    return torch.cat(parts)  # a copy: the cached permutations stay untouched


@functools.lru_cache(maxsize=2)  # the current epoch and the next one (a batch straddling both)
def _epoch_permutation(num: int, seed: int, epoch: int) -> Tensor:
    """The data order of epoch `epoch`, drawn once and reused by every batch of that epoch."""
    return torch.randperm(num, generator=torch.Generator().manual_seed(mix_seed(seed, DATA_ORDER, epoch)))


def _to_batch(data: dict[str, Tensor], idx: Tensor, device: torch.device) -> dict[str, Tensor]:
    batch = {}
    for k, v in data.items():
        v = v.index_select(0, idx).to(device, non_blocking=True)  # = v[idx], several times faster on images
        if k == "image" and v.dtype == torch.uint8:
            v = v.float().div_(127.5).sub_(1)  # = v.float() / 127.5 - 1, bit for bit, in one buffer
        batch[k] = v
    return batch


def _seed_step_rng(seed: int, device: torch.device) -> None:
    """torch.manual_seed(seed) for the generators a training step draws from (dropout): the CPU's, and the
    CUDA devices' when training on CUDA. The same draws, without the ~0.25 ms per call that
    torch.manual_seed spends queuing seeds (with tracebacks) for backends that are not initialised."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise VcdmError("train.precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


class _StopSignals:
    """Turns SIGINT / SIGTERM into a flag the loop checks after each step (main thread only)."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def train(
    model: nn.Module,
    task: Task,
    data: dict[str, Tensor],
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    resume: bool = True,
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train `model` on `data` with `task` until cfg.total_nimg images are seen; resumable.

    Args:
        model: the module whose parameters are optimised (e.g. an EDMPrecond around a U-Net).
        task: provides `loss(model, batch, generator) -> (B,)`.
        data: tensors with a common first dimension N; "image" may be uint8 (converted to [-1, 1]).
        cfg: TrainConfig. run_dir: where checkpoints/ and log.jsonl go.
        meta: JSON-able description of the model and data, stored in checkpoints and checked on resume.
        resume: continue from the newest training state in run_dir/checkpoints if there is one.
    Returns:
        TrainResult with the EMA model.
    """
    run_dir = Path(run_dir)
    meta = meta or {}
    device = dist.device()
    world, rank = dist.world_size(), dist.rank()
    num = len(next(iter(data.values())))
    if any(len(v) != num for v in data.values()):
        raise VcdmError(f"training tensors differ in length: { {k: len(v) for k, v in data.items()} }")
    if num == 0:
        raise VcdmError("the training set is empty")
    if cfg.micro_batches % world:
        raise VcdmError(f"train.micro_batches ({cfg.micro_batches}) must be a multiple of the number of "
                        f"processes ({world})")  # fmt: skip
    model.to(device).train()
    ema = EMA(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    nimg, seconds, losses = 0, 0.0, []

    states = list_training_states(run_dir) if resume else []
    if states:
        st = load_training_state(states[-1])
        if st["meta"] != meta:
            raise VcdmError(f"{states[-1]}: checkpoint was written for a different model or config; "
                            "use a new run directory or --force to start over")  # fmt: skip
        load_state_dict_checked(model, st["model"], states[-1])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["optimizer"])
        nimg, seconds = int(st["counters"]["nimg"]), float(st["counters"]["seconds"])
        losses = st["extra"]["losses"].tolist() if "losses" in st["extra"] else []
        dist.print0(f"[{desc}] resumed from {states[-1]} at {nimg} images")

    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    micro = cfg.batch_size // cfg.micro_batches
    params = list(model.parameters())  # looked up once: the module walk costs ~0.3 ms per step
    my_micro = list(range(rank, cfg.micro_batches, world))

    def checkpoint() -> Path | None:
        path = None
        if rank == 0:
            path = save_training_state(
                run_dir, model=model, ema=ema.model, optimizer=opt, meta=meta, keep=cfg.keep_checkpoints,
                counters={"nimg": nimg, "seconds": seconds},
                extra={"losses": torch.tensor(losses, dtype=torch.float64)},
            )  # fmt: skip
        dist.barrier()
        return path

    bar = tqdm(total=cfg.total_nimg, initial=nimg, desc=desc, unit="img", disable=not progress or rank != 0,
               dynamic_ncols=True, smoothing=0.1)  # fmt: skip
    stopped = None
    next_ckpt = (nimg // cfg.checkpoint_every_nimg + 1) * cfg.checkpoint_every_nimg
    next_log = (nimg // cfg.log_every_nimg + 1) * cfg.log_every_nimg
    t_last = time.perf_counter()
    with _StopSignals() as stop:
        while nimg < cfg.total_nimg:
            idx = batch_indices(num, nimg, cfg.batch_size, cfg.seed)
            lr = learning_rate(cfg, nimg)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device, dtype=torch.float64)
            for j, m in enumerate(my_micro):
                batch = _to_batch(data, idx[m * micro : (m + 1) * micro], device)
                gen = torch.Generator(device).manual_seed(mix_seed(cfg.seed, nimg, m))
                sync = ddp.no_sync() if world > 1 and j < len(my_micro) - 1 else contextlib.nullcontext()
                with sync, torch.random.fork_rng(devices=[]), _autocast(cfg.precision, device):
                    _seed_step_rng(mix_seed(cfg.seed, nimg, m, 1), device)  # dropout; CPU's restored on exit
                    per_sample = task.loss(ddp, batch, gen).float()
                    # sum / global batch; DDP averages over processes, hence * world
                    (per_sample.sum() * (world / cfg.batch_size)).backward()
                total += per_sample.detach().sum().double()
            if world > 1:
                torch.distributed.all_reduce(total)
            loss = float(total) / cfg.batch_size
            if not math.isfinite(loss):
                last = list_training_states(run_dir)
                where = f"; the last good checkpoint is {last[-1]}" if last else ""
                raise VcdmError(f"[{desc}] loss became {loss} at {nimg} images (try a lower train.lr){where}")
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            nimg += cfg.batch_size
            ema.update(model, ema_beta(cfg.batch_size, nimg, cfg.ema_halflife_nimg, cfg.ema_rampup))
            losses.append(loss)
            now = time.perf_counter()
            seconds += now - t_last
            t_last = now
            bar.update(cfg.batch_size)
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{nimg / max(seconds, 1e-9):.0f}", refresh=False)
            if nimg >= next_log and rank == 0:
                next_log += cfg.log_every_nimg
                recent = float(np.mean(losses[-max(1, cfg.log_every_nimg // cfg.batch_size) :]))
                _append_log(run_dir, {"nimg": nimg, "loss": recent, "lr": lr, "seconds": round(seconds, 2)})
            if cfg.max_seconds is not None and seconds >= cfg.max_seconds:
                stopped = "max_seconds"
            if stop.signum is not None:
                path = checkpoint()
                bar.close()
                raise TrainingInterrupted(path or run_dir, stop.signum)
            if nimg >= next_ckpt or nimg >= cfg.total_nimg or stopped:
                next_ckpt += cfg.checkpoint_every_nimg
                checkpoint()
            if stopped:
                break
    bar.close()
    return TrainResult(nimg=nimg, seconds=seconds, losses=losses, ema=ema.model, stopped_early=stopped)


def _append_log(run_dir: Path, row: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "log.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
