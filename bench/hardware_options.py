"""What the hardware offers, where it pays (issue "Speed", part 2): AdamW implementations, channels_last,
bf16 autocast and torch.compile, on vcdm's U-Net denoisers (EDMPrecond around vcdm.networks.UNet).

Run as `OMP_WAIT_POLICY=PASSIVE nice -n 5 .venv/bin/python bench/hardware_options.py [--rounds 4]
[--seconds 1.5] [--configs demo rgb32 ...] [--no-compile]`.

Configurations (all with a 32-d conditioning embedding "emb", except the upsampler, as the presets build them):
  demo       the MNIST demo's U-Net: 28x28x1, base 16, mults (1,2,4), batch 64
  rgb32      the emoji preset's decoder: 32x32x3, base 32, mults (1,2,2), attention at 8, batch 64
  rgb64      the same at base 64, batch 32
  rgb128     the same at base 128, batch 32
  upsampler  the emoji preset's upsampler: 64x64x3 + the 3-channel "lowres" image, base 16, mults (1,2,2,2),
             aug_embedding (cond "lowres" (B,3,64,64) and "aug_sigma" (B,)), batch 32

A training step is what vcdm.training.train does around the network: EDM-weighted denoising loss on a
pre-made noisy batch, backward, clip_grad_norm_(1.0), AdamW step (lr 2e-3, betas (0.9, 0.99)). A sampling
step is one denoiser evaluation without gradients (torch.inference_mode) on a batch of the same size.
Training rows, each its own copy of the same initial weights and its own optimiser:
  fp32 default    torch.optim.AdamW as vcdm builds it (on the CPU: the per-parameter for-loop)
  foreach         AdamW(foreach=True)
  fused           AdamW(fused=True)
  channels_last   model.to(memory_format=torch.channels_last), x and "lowres" channels_last; default AdamW
  bf16 autocast   torch.autocast("cpu", torch.bfloat16) around the forward; default AdamW
  compile         torch.compile(model) (default mode) for forward + backward; default AdamW
Sampling rows: fp32, channels_last, bf16 autocast, compile (a separate graph: inference mode).

Every configuration runs in its own worker process (python bench/hardware_options.py --worker NAME), which
  1. builds the variants and runs --check-steps training steps of each on the same batches (the compiled one's
     first step and first sampling call include compilation: timed, with TORCHINDUCTOR_CACHE_DIR set to a fresh,
     empty directory), then reports each variant's max |weight - default's weight| after those steps;
  2. measures: --rounds rounds, each running every variant for about --seconds (at least one whole step),
     in an order rotated every round (A B C .. then B C .. A); the step time of a variant in a round is the
     median of its steps; its ratio to fp32 default is taken within the round (the same load) and the
     tables give the median over rounds with the range [min-max].
Then a second fresh process with the same cache directory compiles again (warm cache): the compile time a
later run pays. Break-even: compile seconds / (eager step - compiled step) steps, times the batch size, in
training images (or sampled images); "never" when the compiled step is not faster.

`--optimizer-only` instead times the AdamW step alone (default / foreach / fused) on each configuration's
parameters with fixed random gradients, interleaved over --rounds rounds of ~--seconds each, in this process:
the part of a training step the AdamW implementation can change, measured apart from the noisier whole step.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vcdm.diffusion import EDMPrecond
from vcdm.networks import UNet, UNetConfig

EMB = 32
CONFIGS: dict[str, tuple[UNetConfig, int, str]] = {
    "demo": (UNetConfig(image_size=28, in_channels=1, base_channels=16, channel_mults=(1, 2, 4), emb_dim=EMB), 64,
             "28x28x1, base 16, (1,2,4)"),
    "rgb32": (UNetConfig(image_size=32, in_channels=3, base_channels=32, channel_mults=(1, 2, 2),
                         attn_resolutions=(8,), emb_dim=EMB), 64, "32x32x3, base 32, (1,2,2), attn 8"),
    "rgb64": (UNetConfig(image_size=32, in_channels=3, base_channels=64, channel_mults=(1, 2, 2),
                         attn_resolutions=(8,), emb_dim=EMB), 32, "32x32x3, base 64, (1,2,2), attn 8"),
    "rgb128": (UNetConfig(image_size=32, in_channels=3, base_channels=128, channel_mults=(1, 2, 2),
                          attn_resolutions=(8,), emb_dim=EMB), 32, "32x32x3, base 128, (1,2,2), attn 8"),
    "upsampler": (UNetConfig(image_size=64, in_channels=3, extra_in_channels=3, base_channels=16,
                             channel_mults=(1, 2, 2, 2), aug_embedding=True), 32,
                  "64x64x3 + lowres 3, base 16, (1,2,2,2), aug emb"),
}  # fmt: skip
TRAIN = ("fp32 default", "foreach", "fused", "channels_last", "bf16 autocast", "compile")
SAMPLE = ("fp32", "channels_last", "bf16 autocast", "compile")
LR, BETAS, WD, CLIP, SIGMA_DATA = 2e-3, (0.9, 0.99), 0.0, 1.0, 0.5  # as TrainConfig (weight_decay 0)


# ---- worker: one configuration ----


def make_batches(cfg: UNetConfig, batch: int, count: int = 2) -> list[dict]:
    """Pre-made training batches: x0, noisy x, sigma (EDM's log-normal), cond, loss weight."""
    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(count):
        shape = (batch, cfg.in_channels, cfg.image_size, cfg.image_size)
        x0 = torch.rand(shape, generator=g) * 2 - 1
        sigma = (-1.2 + 1.2 * torch.randn(batch, generator=g)).exp()
        x = x0 + sigma[:, None, None, None] * torch.randn(shape, generator=g)
        cond = {}
        if cfg.emb_dim:
            cond["emb"] = torch.randn(batch, cfg.emb_dim, generator=g)
        if cfg.extra_in_channels:
            cond["lowres"] = torch.rand((batch, cfg.extra_in_channels, *shape[2:]), generator=g) * 2 - 1
        if cfg.aug_embedding:
            cond["aug_sigma"] = torch.rand(batch, generator=g) * 0.5
        weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2
        out.append({"x0": x0, "x": x, "sigma": sigma, "cond": cond, "weight": weight})
    return out


def to_channels_last(b: dict) -> dict:
    cl = torch.channels_last
    cond = {k: (v.contiguous(memory_format=cl) if v.ndim == 4 else v) for k, v in b["cond"].items()}
    return {
        **b,
        "x": b["x"].contiguous(memory_format=cl),
        "x0": b["x0"].contiguous(memory_format=cl),
        "cond": cond,
    }


class Variant:
    """One way of running the same denoiser: its model copy, optimiser, inputs and autocast."""

    def __init__(self, base: torch.nn.Module, batches: list[dict], *, opt: str = "default",
                 channels_last: bool = False, bf16: bool = False, compile: bool = False):  # fmt: skip
        self.model = copy.deepcopy(base).train()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            batches = [to_channels_last(b) for b in batches]
        self.params = list(self.model.parameters())
        kw = {"foreach": True} if opt == "foreach" else {"fused": True} if opt == "fused" else {}
        self.opt = torch.optim.AdamW(self.params, lr=LR, betas=BETAS, weight_decay=WD, **kw)
        self.fn = torch.compile(self.model) if compile else self.model
        self.batches, self.bf16, self.i = batches, bf16, 0

    def train_step(self) -> None:
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            d = self.fn(b["x"], b["sigma"], b["cond"])
        loss = (b["weight"] * (d.float() - b["x0"]).square().flatten(1).mean(1)).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, CLIP)
        self.opt.step()

    def sample_step(self) -> None:
        b = self.batches[0]
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            self.fn(b["x"], b["sigma"], b["cond"])


def timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def build(name: str, with_compile: bool) -> tuple[UNetConfig, int, dict[str, Variant]]:
    cfg, batch, _ = CONFIGS[name]
    torch.manual_seed(0)
    base = EDMPrecond(UNet(cfg), sigma_data=SIGMA_DATA)
    batches = make_batches(cfg, batch)
    variants = {
        "fp32 default": Variant(base, batches),
        "foreach": Variant(base, batches, opt="foreach"),
        "fused": Variant(base, batches, opt="fused"),
        "channels_last": Variant(base, batches, channels_last=True),
        "bf16 autocast": Variant(base, batches, bf16=True),
    }
    if with_compile:
        variants["compile"] = Variant(base, batches, compile=True)
    return cfg, batch, variants


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    cfg, batch, v = build(args.worker, not args.no_compile)
    out: dict = {
        "name": args.worker,
        "batch": batch,
        "params": sum(p.numel() for p in v["fp32 default"].params),
    }
    if args.compile_only:  # a later run, warm cache: only the compile time of the first calls
        out["compile_train_s"] = timed(v["compile"].train_step)
        out["compile_sample_s"] = timed(v["compile"].sample_step)
        Path(args.json).write_text(json.dumps(out))
        return
    first: dict[str, list[float]] = {k: [] for k in v}
    for _ in range(args.check_steps):  # the same batches in the same order: comparable weights afterwards
        for k, var in v.items():
            first[k].append(timed(var.train_step))
    ref = v["fp32 default"].params
    out["max_diff"] = {
        k: max(float((a.detach() - b.detach()).abs().max()) for a, b in zip(var.params, ref, strict=True))
        for k, var in v.items()
    }
    out["max_weight"] = max(float(p.detach().abs().max()) for p in ref)
    out["check_steps"] = args.check_steps
    if "compile" in v:
        out["compile_train_s"] = first["compile"][0]  # the first step: tracing, compiling, running
        out["eager_first_step_s"] = first["fp32 default"][0]
        out["compile_sample_s"] = timed(v["compile"].sample_step)
    for k in v:
        if k != "compile":
            v[k].sample_step()  # warm-up of the inference kernels
    sample_of = {"fp32": "fp32 default", "channels_last": "channels_last", "bf16 autocast": "bf16 autocast",
                 "compile": "compile"}  # fmt: skip
    jobs = [("train", k, v[k].train_step) for k in TRAIN if k in v]
    jobs += [("sample", k, v[sample_of[k]].sample_step) for k in SAMPLE if sample_of[k] in v]
    times: dict[str, list[list[float]]] = {f"{kind} {k}": [] for kind, k, _ in jobs}
    for r in range(args.rounds):
        order = jobs[r % len(jobs) :] + jobs[: r % len(jobs)]
        for kind, k, fn in order:
            steps, start = [], time.perf_counter()
            while not steps or time.perf_counter() - start < args.seconds:
                steps.append(timed(fn))
            times[f"{kind} {k}"].append(steps)
        print(f"  [{args.worker}] round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    out["times"] = times
    Path(args.json).write_text(json.dumps(out))


# ---- driver ----


def run_worker(name: str, args: argparse.Namespace, cache: str, json_path: str, compile_only: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--json", json_path, "--threads", str(args.threads),
           "--rounds", str(args.rounds), "--seconds", str(args.seconds), "--check-steps", str(args.check_steps)]  # fmt: skip
    if compile_only:
        cmd.append("--compile-only")
    if args.no_compile:
        cmd.append("--no-compile")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    subprocess.run(cmd, env=env, check=True)
    return json.loads(Path(json_path).read_text())


def med_range(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def report(results: dict[str, dict], warm: dict[str, dict], args: argparse.Namespace) -> None:
    def round_medians(res: dict, key: str) -> list[float]:
        return [statistics.median(s) for s in res["times"][key]]

    def ratios(res: dict, key: str, base: str) -> list[float]:
        # speed of `key` relative to `base`, round by round: base step / key step (> 1 = faster)
        return [b / k for b, k in zip(round_medians(res, base), round_medians(res, key), strict=True)]

    print(f"\ntorch {torch.__version__}, {args.threads} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; {args.rounds} rounds x ~{args.seconds:g} s per "
          "measurement, interleaved; step times in ms: median of the rounds' median step [min-max over rounds]; "
          "speed-up = (fp32 default step) / (this step) within each round, median [min-max]\n")  # fmt: skip
    print("| config | params | batch | what |", " | ".join(TRAIN), "|")
    print("|---|---:|---:|---|" + "---:|" * len(TRAIN))
    for name, res in results.items():
        cols_t, cols_r = [], []
        for k in TRAIN:
            key = f"train {k}"
            if key not in res["times"]:
                cols_t.append("-")
                cols_r.append("-")
                continue
            cols_t.append(med_range([1e3 * t for t in round_medians(res, key)], "{:.0f}"))
            cols_r.append(med_range(ratios(res, key, "train fp32 default")))
        head = f"| {name} | {res['params'] / 1e6:.2f}M | {res['batch']} |"
        print(head, "train step ms |", " | ".join(cols_t), "|")
        print(f"| {name} | | |", "train speed-up |", " | ".join(cols_r), "|")
        b = res["batch"]
        rate = b / statistics.median(round_medians(res, "train fp32 default"))
        print(f"| {name} | | |", f"images/s (fp32 default {rate:.0f}) |", " | ".join(
            f"{b / statistics.median(round_medians(res, f'train {k}')):.0f}" if f"train {k}" in res["times"] else "-"
            for k in TRAIN), "|")  # fmt: skip

    print("\nSampling (one denoiser evaluation, inference mode, same batch): step ms and speed-up vs fp32\n")
    print("| config | batch | what |", " | ".join(SAMPLE), "|")
    print("|---|---:|---|" + "---:|" * len(SAMPLE))
    for name, res in results.items():
        keys = [f"sample {k}" for k in SAMPLE]
        print(f"| {name} | {res['batch']} | step ms |", " | ".join(
            med_range([1e3 * t for t in round_medians(res, k)], "{:.0f}") if k in res["times"] else "-"
            for k in keys), "|")  # fmt: skip
        print(f"| {name} | | speed-up |", " | ".join(
            med_range(ratios(res, k, "sample fp32")) if k in res["times"] else "-" for k in keys), "|")  # fmt: skip

    print("\nExactness: max |weight - fp32 default's weight| after the same training steps (and the largest "
          "weight magnitude); 0 = bit-identical\n")  # fmt: skip
    print("| config | steps | largest |w| |", " | ".join(k for k in TRAIN if k != "fp32 default"), "|")
    print("|---|---:|---:|" + "---:|" * (len(TRAIN) - 1))
    for name, res in results.items():
        d = res["max_diff"]
        print(f"| {name} | {res['check_steps']} | {res['max_weight']:.3g} |",
              " | ".join(f"{d[k]:.2g}" if k in d else "-" for k in TRAIN if k != "fp32 default"), "|")  # fmt: skip

    if args.no_compile:
        return
    print("\ntorch.compile (default mode): the first call's time (tracing + compiling + running once) in a fresh "
          "process with an empty TORCHINDUCTOR_CACHE_DIR (cold) and in a second fresh process with the same "
          "directory (warm); steady-state gain per step against fp32 default eager; break-even = compile time / "
          "gain per step x batch, in images\n")  # fmt: skip
    print(
        "| config | what | cold first call s | warm first call s | eager step ms | compiled step ms | "
        "gain ms/step | break-even cold (images) | break-even warm (images) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, res in results.items():
        b = res["batch"]
        for what, base, key, ck in (("train", "train fp32 default", "train compile", "compile_train_s"),
                                    ("sample", "sample fp32", "sample compile", "compile_sample_s")):  # fmt: skip
            te = statistics.median(round_medians(res, base))
            tc = statistics.median(round_medians(res, key))
            gain = te - tc
            cold, hot = res[ck], warm.get(name, {}).get(ck)

            def be(c: float | None, gain=gain, b=b) -> str:
                if c is None:
                    return "-"
                return f"{c / gain * b:,.0f}" if gain > 0 else "never"

            print(f"| {name} | {what} | {cold:.1f} | {'-' if hot is None else f'{hot:.1f}'} | {1e3 * te:.0f} | "
                  f"{1e3 * tc:.0f} | {1e3 * gain:.0f} | {be(cold)} | {be(hot)} |")  # fmt: skip


def optimizer_only(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    impls = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    rows = {}
    for name in args.configs:
        cfg = CONFIGS[name][0]
        torch.manual_seed(0)
        net = UNet(cfg)
        g = torch.Generator().manual_seed(3)
        grads = [torch.randn(p.shape, generator=g) * 1e-3 for p in net.parameters()]
        runs = {}
        for k, kw in impls.items():
            params = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
            for p, gr in zip(params, grads, strict=True):
                p.grad = gr.clone()
            opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, weight_decay=WD, **kw)
            opt.step()  # the state (exp_avg, exp_avg_sq) exists from here on
            runs[k] = opt.step
        times: dict[str, list[float]] = {k: [] for k in impls}
        keys = list(impls)
        for r in range(args.rounds):
            for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
                steps, start = [], time.perf_counter()
                while not steps or time.perf_counter() - start < args.seconds:
                    steps.append(timed(runs[k]))
                times[k].append(statistics.median(steps))
        rows[name] = (sum(p.numel() for p in net.parameters()), len(grads), times)
    print(f"\ntorch {torch.__version__}, {args.threads} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; AdamW step alone (fixed random gradients), ms: median "
          f"of {args.rounds} interleaved rounds' median step [min-max]; speed-up vs default within each round\n")  # fmt: skip
    print(
        "| config | params | tensors | default ms | foreach ms | fused ms | foreach speed-up | fused speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (n, count, t) in rows.items():
        ms = {k: med_range([1e3 * x for x in v], "{:.1f}") for k, v in t.items()}
        sp = {
            k: med_range([a / b for a, b in zip(t["default"], t[k], strict=True)])
            for k in ("foreach", "fused")
        }
        print(f"| {name} | {n / 1e6:.2f}M | {count} | {ms['default']} | {ms['foreach']} | {ms['fused']} | "
              f"{sp['foreach']} | {sp['fused']} |")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS), metavar="NAME",
                   help=f"subset of configs (default all): {', '.join(CONFIGS)}")  # fmt: skip
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds over all variants")
    p.add_argument("--seconds", type=float, default=1.5, help="seconds per measurement (at least one step)")
    p.add_argument(
        "--check-steps", type=int, default=3, help="training steps before the weights are compared"
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    p.add_argument("--optimizer-only", action="store_true", help="time the AdamW step alone (see above)")
    p.add_argument("--json-out", default=None, help="also write the raw results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)
    p.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.optimizer_only:
        optimizer_only(args)
        return
    start = time.perf_counter()
    results, warm = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            cache = os.path.join(tmp, f"inductor-{name}")  # fresh and empty: a cold compile
            print(f"{name}: {CONFIGS[name][2]}, batch {CONFIGS[name][1]} ({time.perf_counter() - start:.0f} s)",
                  flush=True)  # fmt: skip
            results[name] = run_worker(name, args, cache, os.path.join(tmp, f"{name}.json"), False)
            if not args.no_compile:
                warm[name] = run_worker(name, args, cache, os.path.join(tmp, f"{name}-warm.json"), True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"results": results, "warm": warm}, indent=1))
    report(results, warm, args)
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
