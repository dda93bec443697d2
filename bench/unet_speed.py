"""Training and sampling throughput of a few U-Net decoder sizes, fp32 vs bf16 autocast, on the CPU.

Run as `.venv/bin/python bench/unet_speed.py [--rounds 3] [--seconds 3] [--batch 128] [--threads 2]`.
Each measurement runs whole steps for about `--seconds`; measurements are interleaved round-robin over
the configs and modes for `--rounds` rounds (the machine is shared and noisy) and the table reports the
median over rounds with the range in brackets. A training step is forward + backward + AdamW step on a
batch of 28x28x1 images with a 32-dim conditioning embedding; a sampling step is one forward pass
without gradients (one denoiser evaluation of a sampler).

On a CPU shared with other busy processes, run with `OMP_WAIT_POLICY=PASSIVE` in the environment: with
the default (spinning) policy two torch threads can slow down about 5x when another process takes a core,
because each parallel region waits for the descheduled thread. The header line says which policy was used.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from vcdm.networks import UNet, UNetConfig

EMB_DIM = 32
CONFIGS = {
    "b16 (1,2,2) r1": UNetConfig(base_channels=16, emb_dim=EMB_DIM),
    "b16 (1,2,4) r1": UNetConfig(base_channels=16, channel_mults=(1, 2, 4), emb_dim=EMB_DIM),
    "b24 (1,2,2) r1": UNetConfig(base_channels=24, emb_dim=EMB_DIM),
    "b32 (1,2,2) r1": UNetConfig(base_channels=32, emb_dim=EMB_DIM),
    "b32 (1,2,2) r2": UNetConfig(base_channels=32, num_res_blocks=2, emb_dim=EMB_DIM),
    "b32 (1,2,2) r1 attn7": UNetConfig(base_channels=32, attn_resolutions=(7,), emb_dim=EMB_DIM),
    "b48 (1,2,2) r1": UNetConfig(base_channels=48, emb_dim=EMB_DIM),
    "b64 (1,2,2) r1": UNetConfig(base_channels=64, emb_dim=EMB_DIM),
}
MODES = ("train fp32", "train bf16", "sample fp32", "sample bf16")


def make_step(name: str, batch: int, seed: int) -> tuple[int, dict[str, Callable[[], None]]]:
    """Build the network of config `name`; return its parameter count and one step function per mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UNet(CONFIGS[name])
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, 28, 28, generator=generator)
    target = torch.randn(batch, 1, 28, 28, generator=generator)
    c_noise = torch.randn(batch, generator=generator)
    cond = {"emb": torch.randn(batch, EMB_DIM, generator=generator)}

    def train(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = (net(x, c_noise, cond) - target).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sample(bf16: bool) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            net(x, c_noise, cond)

    steps = {
        "train fp32": lambda: train(False),
        "train bf16": lambda: train(True),
        "sample fp32": lambda: sample(False),
        "sample bf16": lambda: sample(True),
    }
    return sum(p.numel() for p in net.parameters()), steps


def images_per_second(step: Callable[[], None], batch: int, seconds: float) -> float:
    """Run whole steps for about `seconds` (at least one) and return images processed per second."""
    count, start = 0, time.perf_counter()
    while count < 1 or time.perf_counter() - start < seconds:
        step()
        count += 1
    return count * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds over all measurements")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--batch", type=int, default=128, help="images per step")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--configs",
        nargs="*",
        default=list(CONFIGS),
        choices=list(CONFIGS),
        metavar="NAME",
        help=f"subset of configs (default all): {', '.join(CONFIGS)}",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    params, steps = {}, {}
    for name in args.configs:
        params[name], steps[name] = make_step(name, args.batch, seed=0)
        for mode in MODES:  # warm-up: first calls pay for kernel selection and allocator growth
            steps[name][mode]()

    results: dict[tuple[str, str], list[float]] = {
        (name, mode): [] for name in args.configs for mode in MODES
    }
    for round_index in range(args.rounds):
        for name in args.configs:
            for mode in MODES:
                results[name, mode].append(images_per_second(steps[name][mode], args.batch, args.seconds))
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)

    def cell(name: str, mode: str) -> str:
        values = results[name, mode]
        return f"{statistics.median(values):.0f} [{min(values):.0f}-{max(values):.0f}]"

    def ratio(name: str, kind: str) -> str:
        bf16, fp32 = (statistics.median(results[name, f"{kind} {p}"]) for p in ("bf16", "fp32"))
        return f"{bf16 / fp32:.2f}"

    print(
        f"\nbatch {args.batch}, 28x28x1, emb {EMB_DIM}, {args.threads} threads, {args.rounds} rounds x "
        f"{args.seconds:g} s, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
        "images/s, median [min-max] over rounds\n"
    )
    print("| config | params | train fp32 | train bf16 | bf16/fp32 | sample fp32 | sample bf16 | bf16/fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.configs:
        print(
            f"| {name} | {params[name] / 1e6:.2f}M | {cell(name, 'train fp32')} | {cell(name, 'train bf16')} "
            f"| {ratio(name, 'train')} | {cell(name, 'sample fp32')} | {cell(name, 'sample bf16')} "
            f"| {ratio(name, 'sample')} |"
        )


if __name__ == "__main__":
    main()
