"""The shared training loop against the bare network step, on the MNIST demo's decoder (issue "Speed").

Run as `OMP_WAIT_POLICY=PASSIVE nice -n 5 .venv/bin/python bench/train_loop_speed.py [--rounds 10]
[--steps 8] [--reference REV]`.

Compared in one process:
  bare       forward + backward + AdamW step of the same denoiser (EDM preconditioning around the U-Net,
             fresh weights), on pre-made float batches (noisy images, sigmas, embeddings, dropout masks);
  loop       `vcdm.training.train` on the demo's data (uint8 MNIST + a random 32-d "emb"), fresh weights;
             its step is the whole iteration from one loss call to the next (data order, batch, seeds,
             noise, forward, backward, clipping, AdamW, EMA, progress bar written to /dev/null;
             --no-progress: none), the one-time setup and the final checkpoint left out;
  loop REV   the same with vcdm/training/loop.py and ema.py as they were at git revision REV (default: the
             commit before the speed work), loaded from git into this process.
The machine is shared, so the steps are paired: the loop's task runs one bare step at each loss call
(timed apart, left out of the loop's step), and every loop step is compared with its two neighbouring bare
steps; the loops take turns over --rounds runs of --steps steps. The table gives images/s (median step) and
the median of the per-step ratios, in wall-clock time and in CPU time of this process.

`--check-identical` instead trains decoders with the loop at REV and with the current loop and compares
losses, final training states (model, EMA, optimiser) and exported EMA weights with torch.equal: the tiny
preset's decoder (bf16 autocast), the tiny preset on 100 images (batches straddle epochs), the mnist
preset's decoder, and the mnist decoder with 2 micro-batches; each also resumed half-way, from a checkpoint
of the current loop and from one written by the loop at REV. Exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vcdm.config import preset, to_dict
from vcdm.data import load_mnist
from vcdm.guidance import drop_condition
from vcdm.seeding import mix_seed
from vcdm.stages import DiffusionTask, build_denoiser, get_kind
from vcdm.training import TrainConfig, train
from vcdm.training.checkpoint import list_training_states, load_training_state

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "1f8d51b"  # the loop before the speed work


@dataclass
class Setup:
    meta: dict
    data: dict[str, torch.Tensor]
    task: DiffusionTask
    train: TrainConfig


def decoder_setup(name: str = "mnist", limit: int | None = None) -> Setup:
    """A preset's decoder as `vcdm train decoder` builds it, on MNIST with a random (N, emb dim) "emb"."""
    cfg = preset(name)
    st = cfg.decoder
    emb_dim = cfg.embedder.encoder.dim
    net = replace(st.net, image_size=28, in_channels=1, emb_dim=emb_dim)
    meta = {
        "kind": "decoder",
        "net": to_dict(net),
        "diffusion": to_dict(st.diffusion),
        "condition": st.condition,
    }
    images = load_mnist("train", limit=limit if limit is not None else cfg.data.limit).images
    emb = torch.randn(len(images), emb_dim, generator=torch.Generator().manual_seed(1234))
    task = DiffusionTask("image", st.diffusion, use_emb=True, cond_drop_prob=st.cond_drop_prob)
    return Setup(meta, {"image": images, "emb": emb}, task, st.train)


def build_model(s: Setup) -> torch.nn.Module:
    """The untrained denoiser, with the initial weights `train_stage` gives it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix_seed(s.train.seed, get_kind("decoder").init_stream))
        return build_denoiser(s.meta)


def load_reference_train(rev: str) -> Callable | None:
    """`train` from vcdm/training/loop.py + ema.py at git revision `rev`, or None (with a note) if unavailable."""

    def source(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True,
                              capture_output=True, text=True).stdout  # fmt: skip

    try:
        ema_src, loop_src = source("vcdm/training/ema.py"), source("vcdm/training/loop.py")
    except (OSError, subprocess.CalledProcessError) as e:
        print(
            f"note: no reference loop ({rev}: {getattr(e, 'stderr', e)!s:.100}); comparing with the bare step only"
        )
        return None
    mods = {}
    for name, src in (("ema", ema_src), ("loop", loop_src)):
        mod = types.ModuleType(f"_reference_{name}")
        sys.modules[mod.__name__] = mod  # dataclasses look their module up
        exec(compile(src, f"{rev}:vcdm/training/{name}.py", "exec"), mod.__dict__)
        mods[name] = mod
    mods["loop"].EMA, mods["loop"].ema_beta = mods["ema"].EMA, mods["ema"].ema_beta
    return mods["loop"].train


# ---- speed ----


class BareStep:
    """Forward + backward + AdamW step of a fresh denoiser on pre-made float batches (noisy images, sigmas,
    embeddings, condition-dropout masks drawn once), timed."""

    def __init__(self, s: Setup, batches: list):
        tc = s.train
        self.model = build_model(s).train()
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay
        )
        self.batches, self.i = batches, 0

    def __call__(self) -> tuple[float, float]:
        x0, x, sigma, cond, weight = self.batches[self.i % len(self.batches)]
        self.i += 1
        start = _now()
        loss = (weight * (self.model(x, sigma, cond) - x0).square().flatten(1).mean(1)).sum() / len(x0)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return _since(start)


def premade_batches(s: Setup, count: int = 8) -> list:
    d, b = s.task.diffusion, s.train.batch_size
    g = torch.Generator().manual_seed(7)
    out = []
    for i in range(count):
        x0 = s.data["image"][i * b : (i + 1) * b].float() / 127.5 - 1
        sigma = (d.p_mean + d.p_std * torch.randn(b, generator=g)).exp()
        x = x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=g)
        cond = drop_condition({"emb": s.data["emb"][i * b : (i + 1) * b]}, s.task.cond_drop_prob, b, g)
        weight = (sigma**2 + d.sigma_data**2) / (sigma * d.sigma_data) ** 2
        out.append((x0, x, sigma, cond, weight))
    return out


class _Paired:
    """The loop's task, running one bare step (timed apart) at the start of each loss call.

    The loop's own step is the time from the end of that bare step to the next loss call: the whole
    iteration of the loop (data, forward, backward, clipping, AdamW, EMA, progress bar) without the bare
    step; each loop step is so measured between two bare steps, under the same load.
    """

    def __init__(self, task, bare: BareStep):
        self.task, self.bare = task, bare
        self.calls, self.resumes, self.bare_times = [], [], []

    def loss(self, model, batch, generator):
        self.calls.append(_now())
        self.bare_times.append(self.bare())
        self.resumes.append(_now())
        return self.task.loss(model, batch, generator)

    def loop_times(self) -> list[tuple[float, float]]:
        return [_since(a, b) for a, b in zip(self.resumes, self.calls[1:])]


def paired_run(s: Setup, train_fn: Callable, batches: list, steps: int, progress: bool):
    """Train a fresh model for steps + 2 steps, pairing each loop step with a bare step of a fresh model.

    Returns [(loop step, bare step before, bare step after)] as (wall, CPU) seconds; the first loop step
    (optimiser state) and the last are left out.
    """
    task = _Paired(s.task, BareStep(s, batches))
    cfg = replace(s.train, total_nimg=(steps + 2) * s.train.batch_size)
    with (
        tempfile.TemporaryDirectory() as tmp,
        open(os.devnull, "w") as null,
        contextlib.redirect_stderr(null),
    ):
        train_fn(build_model(s), task, s.data, cfg, tmp, meta=s.meta, progress=progress)
    loop, bare = task.loop_times(), task.bare_times
    return [(loop[i], bare[i], bare[i + 1]) for i in range(1, len(loop))]


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float], end: tuple[float, float] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) from start to end (default: now)."""
    end = end or _now()
    return end[0] - start[0], end[1] - start[1]


def speed(args: argparse.Namespace) -> None:
    s = decoder_setup(args.preset)
    b = s.train.batch_size
    batches = premade_batches(s)
    loops = {"loop (current)": train}
    ref = load_reference_train(args.reference) if args.reference != "none" else None
    if ref is not None:
        loops[f"loop ({args.reference})"] = ref
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; preset {args.preset} decoder, batch {b}, "
          f"{len(s.data['image'])} images; {args.steps} timed steps per measurement, "
          f"{args.rounds} rounds after a warm-up round", flush=True)  # fmt: skip
    names = list(loops)
    for name in names:  # warm-up: oneDNN primitives, allocator
        paired_run(s, loops[name], batches, 2, args.progress)
    pairs: dict[str, list] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            pairs[name] += paired_run(s, loops[name], batches, args.steps, args.progress)
        print(f"round {r + 1}: " + ", ".join(
            f"{n} {b / statistics.median(lp[0] for lp, _, _ in pairs[n][-args.steps :]):.0f} img/s "
            f"(bare {b / statistics.median(bb[0] for _, bb, _ in pairs[n][-args.steps :]):.0f})" for n in names
        ), flush=True)  # fmt: skip
    bare = [x for n in names for _, x, _ in pairs[n]]
    print(f"\n{len(pairs[names[0]])} steps of each loop, each between two bare steps; images/s from the median "
          "step time; the loop's speed relative to the bare step is the median over its steps of "
          "(mean of the two neighbouring bare steps) / (the loop step), in wall-clock and in CPU time of this "
          "process\n")  # fmt: skip
    print("| what | images/s | relative to bare (wall) | relative to bare (CPU) |\n|---|---:|---:|---:|")
    print(f"| bare step | {b / statistics.median(w for w, _ in bare):.0f} | 1 | 1 |")
    for n in names:
        rel = [statistics.median((b0[k] + b1[k]) / 2 / lp[k] for lp, b0, b1 in pairs[n]) for k in (0, 1)]
        rate = b / statistics.median(lp[0] for lp, _, _ in pairs[n])
        print(f"| {n} | {rate:.0f} | {rel[0]:.3f} | {rel[1]:.3f} |")


# ---- bit identity ----


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    st = load_training_state(list_training_states(run_dir)[-1])
    out = {f"model.{k}": v for k, v in st["model"].items()} | {f"ema.{k}": v for k, v in st["ema"].items()}
    for idx, tensors in st["optimizer"]["state"].items():
        out |= {f"optim.{idx}.{k}": v for k, v in tensors.items()}
    return out | {f"extra.{k}": v for k, v in st["extra"].items()}


def _differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    if a.keys() != b.keys():
        return [f"keys differ: {sorted(set(a) ^ set(b))[:3]}"]
    return [k for k in a if not torch.equal(a[k], b[k])]


def check_identical(args: argparse.Namespace) -> int:
    ref = load_reference_train(args.reference)
    if ref is None:
        return 1
    cases = [
        ("tiny decoder (bf16), 256 images", decoder_setup("tiny"), {}),
        ("tiny decoder on 100 images (epochs straddled), 256 images", decoder_setup("tiny", limit=100), {}),
        ("mnist decoder, 384 images", decoder_setup("mnist"),
         {"total_nimg": 384, "checkpoint_every_nimg": 128, "log_every_nimg": 128}),
        ("mnist decoder, 2 micro-batches, 256 images", decoder_setup("mnist"),
         {"total_nimg": 256, "checkpoint_every_nimg": 128, "log_every_nimg": 128, "micro_batches": 2}),
    ]  # fmt: skip
    failed = False
    print(
        "| case | run | losses | training state (model, EMA, AdamW) | export (EMA) |\n|---|---|---|---|---|"
    )
    for title, s, overrides in cases:
        cfg = replace(s.train, **overrides)
        half = replace(cfg, total_nimg=cfg.total_nimg // 2 // cfg.batch_size * cfg.batch_size)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)

            def run(fn, name, c=cfg, s=s, tmp=tmp):
                return fn(build_model(s), s.task, s.data, c, tmp / name, meta=s.meta, progress=False)

            reference = run(ref, "reference")
            results = {"current loop": ("current", run(train, "current"))}
            run(train, "resumed", half)
            results["current loop, resumed half-way"] = ("resumed", run(train, "resumed"))
            run(ref, "cross", half)
            results[f"current loop, resumed from a {args.reference} checkpoint"] = (
                "cross",
                run(train, "cross"),
            )
            ref_state, ref_ema = _final_state(tmp / "reference"), reference.ema.state_dict()
            for name, (folder, res) in results.items():
                d_state = _differences(ref_state, _final_state(tmp / folder))
                d_ema = _differences(ref_ema, res.ema.state_dict())
                same_losses = res.losses == reference.losses
                failed |= bool(d_state or d_ema or not same_losses)
                state = "identical" if not d_state else "DIFFER: " + ", ".join(d_state[:3])
                ema = "identical" if not d_ema else "DIFFER: " + ", ".join(d_ema[:3])
                print(
                    f"| {title} | {name} | {'identical' if same_losses else 'DIFFER'} ({len(res.losses)} steps) | "
                    f"{state} ({len(ref_state)} tensors) | {ema} ({len(ref_ema)} tensors) |",
                    flush=True,
                )
    print("\nall identical" if not failed else "\nDIFFERENCES FOUND")
    return int(failed)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="mnist")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps", type=int, default=8, help="timed loop steps per measurement")
    p.add_argument("--reference", default=REFERENCE, help="git revision of the reference loop, or 'none'")
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", help="loops without a progress bar"
    )
    p.add_argument("--check-identical", action="store_true", help="compare results with the reference loop")
    args = p.parse_args()
    if args.check_identical:
        return check_identical(args)
    speed(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
