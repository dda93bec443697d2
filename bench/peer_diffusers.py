"""vcdm's training loop against diffusers' example loop for UNet2DModel, side by side (issue #16 part 5).

Run as `OMP_WAIT_POLICY=PASSIVE nice -n 5 .venv/bin/python bench/peer_diffusers.py [--rounds 10] [--steps 10]
[--out docs/speed/peer_diffusers.md]`.

diffusers is a development-only dependency of this benchmark, not of vcdm: install it with
`.venv/bin/pip install diffusers==0.42.1` (the version measured; it leaves torch as it is). Without it the
script exits with a one-line error (status 2). Nothing is downloaded at run time.

Four measurements on the same MNIST training images (vcdm.data.load_mnist, 28x28, in [-1, 1]), batch 64, fp32:
  vcdm loop        `vcdm.training.train` with the MNIST demo's TrainConfig on the demo's U-Net, as the
                   single-stage baseline (unconditional, EDM preconditioning and loss, grad clipping, AdamW,
                   EMA, progress bar written to /dev/null);
  diffusers loop   the loop of diffusers' examples/unconditional_image_generation/train_unconditional.py,
                   written here after that recipe: UNet2DModel, DDPMScheduler (1000 steps), a shuffled
                   DataLoader, noise = randn, timesteps = randint, scheduler.add_noise, MSE on the predicted
                   noise, clip_grad_norm_(1.0), AdamW, cosine lr schedule with 500 warm-up steps, EMAModel
                   with warm-up, progress bar with its postfix written to /dev/null; single-process, so
                   accelerate's wrappers are left out (they reduce to the plain calls), as are its tracker,
                   its checkpoints and its sample images; random flip off;
  vcdm bare        forward + backward + AdamW step of the same vcdm denoiser on pre-made noisy batches;
  diffusers bare   the same for the UNet2DModel (pre-made noisy images, timesteps and noise).
UNet2DModel is configured to match the vcdm U-Net (`unet2d_kwargs`: the same channels per level, blocks per
level, attention, scale-shift time conditioning, group-norm groups), so both have the same parameter count.
28x28 needs no padding: both networks downsample twice (28 -> 14 -> 7).

Each round runs the four in a rotated order; a loop runs steps + 2 optimiser steps from a fresh start
(optimiser, EMA, data order) and is timed over the middle `steps` (its first step, which creates the optimiser
state, and its end, with vcdm's final checkpoint, left out), a bare arm over `steps` steps. The table gives
images/s from the median round and the medians over rounds of the per-round ratios, in wall-clock time and in
CPU time of this process (the machine is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its threads

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vcdm.config import preset, to_dict  # noqa: E402
from vcdm.data import load_mnist  # noqa: E402
from vcdm.errors import VcdmError, exit_status  # noqa: E402
from vcdm.networks import UNetConfig  # noqa: E402
from vcdm.networks.layers import group_norm  # noqa: E402
from vcdm.seeding import mix_seed  # noqa: E402
from vcdm.stages import DiffusionTask, build_denoiser, get_kind  # noqa: E402
from vcdm.training import TrainConfig, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIFFUSERS_VERSION = "0.42.1"  # the version measured in docs/speed/peer_diffusers.md
COMMAND = "OMP_WAIT_POLICY=PASSIVE nice -n 5 .venv/bin/python bench/peer_diffusers.py"
ARMS = ("vcdm loop", "diffusers loop", "vcdm bare", "diffusers bare")


@dataclass(frozen=True)
class Recipe:
    """diffusers' train_unconditional.py defaults (its argparse defaults; mixed precision "no")."""

    num_train_timesteps: int = 1000
    lr: float = 1e-4
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 1e-6
    eps: float = 1e-8
    lr_scheduler: str = "cosine"
    lr_warmup_steps: int = 500
    num_epochs: int = 100  # only sets the cosine schedule's length
    ema_max_decay: float = 0.9999
    ema_inv_gamma: float = 1.0
    ema_power: float = 3 / 4
    max_grad_norm: float = 1.0


def require_diffusers() -> Any:
    """The diffusers module, or a VcdmError (one line) saying how to install it."""
    try:
        import diffusers
        import diffusers.optimization  # noqa: F401
        import diffusers.training_utils  # noqa: F401
    except ImportError as e:
        raise VcdmError(
            "bench/peer_diffusers.py needs diffusers, a development-only dependency of this benchmark: "
            f".venv/bin/pip install diffusers=={DIFFUSERS_VERSION} ({str(e).splitlines()[0] if str(e) else e!r})"
        ) from None
    return diffusers


def unet2d_kwargs(cfg: UNetConfig) -> dict[str, Any]:
    """UNet2DModel's constructor arguments for the network closest to vcdm's UNet(cfg).

    The same channels per level (block_out_channels = base * mults), residual blocks per level
    (layers_per_block; both U-Nets add one on the way up), attention at the same feature-map sizes (Attn*
    blocks, the mid-block's), a 4 * base time-embedding width, adaptive group norm (resnet_time_scale_shift
    "scale_shift" = vcdm's norm(h) * (1 + scale) + shift), strided-conv downsampling and nearest + conv
    upsampling. One group count serves all levels in UNet2DModel: vcdm's at full resolution (it divides the
    others). Left as they differ: UNet2DModel's mid-block attention has no group norm under "scale_shift"
    (2 * channels fewer parameters when there is one), the noise-level features (sinusoidal of the DDPM timestep vs vcdm's
    Fourier features of ln(sigma) / 4) and the norms' eps.
    """
    if cfg.extra_in_channels or cfg.emb_dim or cfg.num_classes or cfg.text_dim or cfg.aug_embedding:
        raise VcdmError("unet2d_kwargs: only an unconditional U-Net has a UNet2DModel counterpart here")
    cfg.check_sizes()
    channels = tuple(cfg.base_channels * m for m in cfg.channel_mults)
    attn = [size in cfg.attn_resolutions for size in cfg.resolutions]
    groups = group_norm(channels[0]).num_groups
    if any(c % groups for c in channels):
        raise VcdmError(f"unet2d_kwargs: {groups} groups do not divide the channels {channels}")
    return {
        "sample_size": cfg.image_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels or cfg.in_channels,
        "block_out_channels": channels,
        "layers_per_block": cfg.num_res_blocks,
        "down_block_types": tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        "up_block_types": tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        "add_attention": attn[-1],
        "attention_head_dim": channels[-1] // cfg.attn_heads if any(attn) else 8,
        "norm_num_groups": groups,
        "resnet_time_scale_shift": "scale_shift",
        "dropout": cfg.dropout,
    }


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def round_order(names: Sequence[str], rounds: int) -> list[list[str]]:
    """The order of the arms in each round: rotated by one every round, so each arm takes each place."""
    n = len(names)
    return [[names[(r + i) % n] for i in range(n)] for r in range(rounds)]


def window(stamps: Sequence[tuple[float, float]], steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds of `steps` whole iterations: from the stamp of iteration 1 to that of steps + 1.

    `stamps` holds one (wall, CPU) time per iteration, taken at the same place in each; iteration 0 (the
    optimiser's first step) and whatever follows iteration steps + 1 are left out.
    """
    if len(stamps) < steps + 2:
        raise ValueError(f"window: {steps} steps need {steps + 2} stamps, got {len(stamps)}")
    a, b = stamps[1], stamps[steps + 1]
    return b[0] - a[0], b[1] - a[1]


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def summarize(times: dict[str, list[tuple[float, float]]], images: int) -> dict[str, Any]:
    """Images/s per arm (median round) and the per-round ratios: (wall median, CPU median, wall min, wall max).

    `times[arm]` holds one (wall, CPU) duration per round for `images` images. Ratios: "network" = vcdm bare
    speed / diffusers bare speed, "loop" = vcdm loop speed / diffusers loop speed, "overhead <who>" = loop
    time / bare time of that library (1.25 = the loop takes 25% longer than its bare steps).
    """
    rounds = len(times[ARMS[0]])
    if any(len(times[a]) != rounds for a in ARMS):
        raise ValueError("summarize: every arm needs the same number of rounds")

    def ratio(num: str, den: str) -> tuple[float, float, float, float]:
        wall, cpu = ([times[num][r][k] / times[den][r][k] for r in range(rounds)] for k in (0, 1))
        return statistics.median(wall), statistics.median(cpu), min(wall), max(wall)

    return {
        "rate": {a: images / statistics.median(w for w, _ in times[a]) for a in ARMS},
        "network": ratio("diffusers bare", "vcdm bare"),
        "loop": ratio("diffusers loop", "vcdm loop"),
        "overhead vcdm": ratio("vcdm loop", "vcdm bare"),
        "overhead diffusers": ratio("diffusers loop", "diffusers bare"),
    }


# ---- the vcdm arm ----


@dataclass
class VcdmArm:
    """The demo's single-stage baseline as `vcdm train baseline` builds it on 28x28 MNIST."""

    meta: dict
    task: DiffusionTask
    train: TrainConfig

    @classmethod
    def demo(cls) -> VcdmArm:
        st = preset("mnist").baseline
        net = replace(st.net, image_size=28, in_channels=1, emb_dim=0, num_classes=0, text_dim=0)
        meta = {"kind": "baseline", "net": to_dict(net), "diffusion": to_dict(st.diffusion),
                "condition": st.condition}  # fmt: skip
        return cls(meta, DiffusionTask("image", st.diffusion), st.train)

    @property
    def net(self) -> UNetConfig:
        return UNetConfig(**self.meta["net"])

    def build(self) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.train.seed, get_kind("baseline").init_stream))
            return build_denoiser(self.meta)


class _Stamped:
    """The task, stamping (wall, CPU) time at each loss call: the same place in every loop iteration."""

    def __init__(self, task: DiffusionTask):
        self.task, self.stamps = task, []

    def loss(self, model, batch, generator):
        self.stamps.append(_now())
        return self.task.loss(model, batch, generator)


def vcdm_loop(arm: VcdmArm, model: torch.nn.Module, images: torch.Tensor, steps: int) -> tuple[float, float]:
    """`vcdm.training.train` for steps + 2 steps from a fresh start; (wall, CPU) of the middle `steps`."""
    cfg = replace(arm.train, total_nimg=(steps + 2) * arm.train.batch_size)
    if cfg.total_nimg > min(cfg.checkpoint_every_nimg, cfg.log_every_nimg):
        raise VcdmError(f"--steps {steps}: keep (steps + 2) * batch below the checkpoint and log intervals")
    task = _Stamped(arm.task)
    with (
        tempfile.TemporaryDirectory() as tmp,
        open(os.devnull, "w") as null,
        contextlib.redirect_stderr(null),
    ):
        train(model, task, {"image": images}, cfg, tmp, meta=arm.meta, resume=False)
    return window(task.stamps, steps)


class VcdmBare:
    """Forward + backward + AdamW step of the denoiser on pre-made (x0, x, sigma, EDM weight) batches."""

    def __init__(self, arm: VcdmArm, images: torch.Tensor, count: int = 8):
        tc, d, b = arm.train, arm.task.diffusion, arm.train.batch_size
        self.model = arm.build().train()
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay
        )
        g = torch.Generator().manual_seed(7)
        self.batches = []
        for i in range(count):
            x0 = images[i * b : (i + 1) * b].float() / 127.5 - 1
            sigma = (d.p_mean + d.p_std * torch.randn(b, generator=g)).exp()
            x = x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=g)
            weight = (sigma**2 + d.sigma_data**2) / (sigma * d.sigma_data) ** 2
            self.batches.append((x0, x, sigma, weight))

    def __call__(self, steps: int) -> tuple[float, float]:
        start = _now()
        for i in range(steps):
            x0, x, sigma, weight = self.batches[i % len(self.batches)]
            loss = (weight * (self.model(x, sigma, None) - x0).square().flatten(1).mean(1)).sum() / len(x0)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        end = _now()
        return end[0] - start[0], end[1] - start[1]


# ---- the diffusers arm ----


class _Images(torch.utils.data.Dataset):
    """The uint8 images as the recipe's transforms leave them: ToTensor (/ 255) then Normalize(0.5, 0.5).

    The recipe's PIL conversion, Resize and CenterCrop are left out (identities at 28x28); flip is off.
    """

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input": (self.images[i].float() / 255 - 0.5) / 0.5}


def build_unet2d(net: UNetConfig, seed: int = 0) -> torch.nn.Module:
    from diffusers import UNet2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(**unet2d_kwargs(net))


def diffusers_loop(
    model: torch.nn.Module, images: torch.Tensor, steps: int, batch: int, r: Recipe = Recipe()
) -> tuple[float, float]:
    """train_unconditional.py's loop for steps + 2 steps from a fresh start; (wall, CPU) of the middle `steps`."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    noise_scheduler = DDPMScheduler(num_train_timesteps=r.num_train_timesteps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=r.lr, betas=r.betas, weight_decay=r.weight_decay,
                                  eps=r.eps)  # fmt: skip
    loader = torch.utils.data.DataLoader(_Images(images), batch_size=batch, shuffle=True, num_workers=0)
    lr_scheduler = get_scheduler(r.lr_scheduler, optimizer=optimizer, num_warmup_steps=r.lr_warmup_steps,
                                 num_training_steps=len(loader) * r.num_epochs)  # fmt: skip
    ema_model = EMAModel(model.parameters(), decay=r.ema_max_decay, use_ema_warmup=True, inv_gamma=r.ema_inv_gamma,
                         power=r.ema_power, model_cls=UNet2DModel, model_config=model.config)  # fmt: skip
    stamps = []
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        model.train()
        progress_bar = tqdm(total=steps + 2)
        for step, batch_ in enumerate(loader):
            stamps.append(_now())
            clean_images = batch_["input"]
            noise = torch.randn(clean_images.shape, dtype=clean_images.dtype, device=clean_images.device)
            bsz = clean_images.shape[0]
            timesteps = torch.randint(0, r.num_train_timesteps, (bsz,), device=clean_images.device).long()
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
            model_output = model(noisy_images, timesteps).sample
            loss = F.mse_loss(model_output.float(), noise.float())  # prediction_type "epsilon"
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), r.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            ema_model.step(model.parameters())
            progress_bar.update(1)
            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0], "step": step + 1,
                    "ema_decay": ema_model.cur_decay_value}  # fmt: skip
            progress_bar.set_postfix(**logs)
            if step + 1 == steps + 2:
                break
        progress_bar.close()
    return window(stamps, steps)


class DiffusersBare:
    """Forward + backward + AdamW step of the UNet2DModel on pre-made (noisy, timesteps, noise) batches."""

    def __init__(
        self, net: UNetConfig, images: torch.Tensor, batch: int, r: Recipe = Recipe(), count: int = 8
    ):
        from diffusers import DDPMScheduler

        self.model = build_unet2d(net).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=r.lr, betas=r.betas,
                                     weight_decay=r.weight_decay, eps=r.eps)  # fmt: skip
        scheduler = DDPMScheduler(num_train_timesteps=r.num_train_timesteps)
        g = torch.Generator().manual_seed(7)
        self.batches = []
        for i in range(count):
            x0 = images[i * batch : (i + 1) * batch].float() / 127.5 - 1
            noise = torch.randn(x0.shape, generator=g)
            t = torch.randint(0, r.num_train_timesteps, (batch,), generator=g)
            self.batches.append((scheduler.add_noise(x0, noise, t), t, noise))

    def __call__(self, steps: int) -> tuple[float, float]:
        start = _now()
        for i in range(steps):
            noisy, t, noise = self.batches[i % len(self.batches)]
            loss = F.mse_loss(self.model(noisy, t).sample, noise)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        end = _now()
        return end[0] - start[0], end[1] - start[1]


# ---- the run ----


def _git_rev() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True)  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def table(s: dict[str, Any], params: dict[str, int]) -> str:
    rate = s["rate"]

    def cell(v: tuple[float, float, float, float]) -> str:
        return f"{v[0]:.2f} ({v[1]:.2f}) [{v[2]:.2f}-{v[3]:.2f}]"

    return "\n".join([
        "| | vcdm | diffusers | vcdm / diffusers, speed |",
        "|---|---:|---:|---:|",
        f"| parameters | {params['vcdm']:,} | {params['diffusers']:,} | |",
        f"| bare step (fwd + bwd + AdamW), images/s | {rate['vcdm bare']:.0f} | {rate['diffusers bare']:.0f} "
        f"| network: {cell(s['network'])} |",
        f"| whole training loop, images/s | {rate['vcdm loop']:.0f} | {rate['diffusers loop']:.0f} "
        f"| whole loop: {cell(s['loop'])} |",
        f"| loop time / bare time | {cell(s['overhead vcdm'])} | {cell(s['overhead diffusers'])} | |",
    ])  # fmt: skip


def run(args: argparse.Namespace, argv: Sequence[str]) -> None:
    diffusers = require_diffusers()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the recipe's randn / randint / shuffle draw from the global generator
    load_start, t0 = _load(), time.perf_counter()
    images = load_mnist("train", limit=args.limit).images  # (N, 1, 28, 28) uint8
    arm = VcdmArm.demo()
    batch = arm.train.batch_size
    if args.steps < 1 or args.rounds < 1 or len(images) < 8 * batch:
        raise VcdmError(f"--steps and --rounds must be >= 1 and --limit >= {8 * batch}")
    vcdm_model, unet2d = arm.build(), build_unet2d(arm.net)
    params = {"vcdm": num_params(vcdm_model), "diffusers": num_params(unet2d)}
    bare = {"vcdm bare": VcdmBare(arm, images), "diffusers bare": DiffusersBare(arm.net, images, batch)}
    measure: dict[str, Callable[[int], tuple[float, float]]] = {
        "vcdm loop": lambda n: vcdm_loop(arm, vcdm_model, images, n),
        "diffusers loop": lambda n: diffusers_loop(unet2d, images, n, batch),
        **bare,
    }
    header = (
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, Python {platform.python_version()}, "
        f"vcdm {_git_rev()}; {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; {len(images)} MNIST images 28x28, batch {batch}, fp32; "
        f"{args.rounds} rounds of {args.steps} timed steps per arm after a warm-up round"
    )
    print(header, flush=True)
    print(f"parameters: vcdm {params['vcdm']:,}, UNet2DModel {params['diffusers']:,}; "
          f"UNet2DModel({unet2d_kwargs(arm.net)})", flush=True)  # fmt: skip
    for name in ARMS:  # warm-up: oneDNN primitives, the allocator, the optimisers' state
        measure[name](2)
    times: dict[str, list[tuple[float, float]]] = {a: [] for a in ARMS}
    for r, order in enumerate(round_order(ARMS, args.rounds)):
        for name in order:
            times[name].append(measure[name](args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{a} {args.steps * batch / times[a][-1][0]:.0f} img/s"
                                             for a in ARMS), flush=True)  # fmt: skip
    s = summarize(times, args.steps * batch)
    out = table(s, params)
    print("\n" + out)
    footer = (f"load average (1, 5, 15 min) {load_start} at the start, {_load()} at the end; "
              f"{time.perf_counter() - t0:.0f} s in all")  # fmt: skip
    print(footer)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        command = f"{COMMAND} {shlex.join(argv)}"
        path.write_text(REPORT.format(command=command.strip(), header=header, params=params, table=out,
                                      footer=footer, kwargs=unet2d_kwargs(arm.net),
                                      num_images=len(images)))  # fmt: skip
        print(f"wrote {path}")


REPORT = """# vcdm's training loop against diffusers' example loop (issue #16 part 5)

Written by `bench/peer_diffusers.py` (its docstring describes the arms). Command:

```
{command}
```

{header}.

The vcdm U-Net is the MNIST demo's (base 16, mults (1, 2, 4), one residual block per level, no attention),
unconditional, as the single-stage baseline; UNet2DModel is configured to match it:
`UNet2DModel(**{kwargs})` ({params[vcdm]:,} and {params[diffusers]:,} parameters). Both train on the same
{num_images:,} MNIST images at 28x28 (no padding: both downsample twice), batch 64, fp32, on the CPU.

{table}

Images/s from the median round; ratios are medians over rounds of the per-round ratios (network = bare-step
speed, whole loop = loop speed, vcdm over diffusers; above 1 = vcdm faster), in wall-clock time, in
parentheses in CPU time of this process, in square brackets the wall-clock range over rounds. {footer}.

What is comparable and what is not:
- The same data, batch, precision, threads and parameter count; each arm is its library's own recipe
  (vcdm's demo TrainConfig and EDM training; diffusers' example defaults and DDPM epsilon training), so the
  whole-loop ratio is "vcdm's loop as shipped" against "diffusers' example loop as shipped".
- The networks are not identical: the same layout and parameter count, but different noise-level features
  (Fourier of ln(sigma) / 4 vs sinusoidal of the timestep), norm eps, and vcdm's EDM preconditioning around
  its U-Net. The network ratio (bare steps) separates that from the loops; the loop / bare ratios are each
  loop's own overhead over its own network.
- Per step, vcdm's loop does more than diffusers' (seeded per-step generators for resumable randomness, an EMA
  of all buffers too, a finite-loss check) and diffusers' does things vcdm's does not (a DataLoader with per-item
  transforms and collation, an lr-scheduler object, a per-tensor EMA loop); neither is simplified here.
- Left out of both: checkpoints (vcdm every 8,000 images, the recipe every 500 steps), logging to files or
  trackers, sample images; accelerate (single process, where its wrappers reduce to the plain calls).
"""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=10, help="rounds over the four arms, after a warm-up round")
    p.add_argument("--steps", type=int, default=10, help="timed optimiser steps per arm and round")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument(
        "--limit", type=int, default=None, help="use the first N MNIST training images (default all)"
    )
    p.add_argument(
        "--out", default=str(ROOT / "docs/speed/peer_diffusers.md"), help="markdown report ('' = none)"
    )
    return exit_status(run, p.parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
