"""Cascade against direct at 64x64, at equal training FLOPs (benchmark 3b of "Real RGB images at 64x64").

The cascade: a finished `vcdm demo --preset emoji` run (prior -> two-stage decoder at 32x32 -> SR3 upsampler
32 -> 64), used read-only. The direct arm: a copy of that run's config, embedder, embeddings and prior (so both
arms share the very same y for a seed) with a two-stage decoder trained directly at the data's 64x64: the same
U-Net widths and training settings (batch, lr, warm-up, EMA) as the cascade's decoder, attention at the bottom
feature map (16x16 at 64 for channel_mults (1, 2, 2), where the cascade's has it at 8x8 at 32), and a training
budget in images chosen so that its training FLOPs equal the cascade's decoder + upsampler together.

    # 1. FLOPs per training image of each network (forward + backward of the stage's own loss, counted with
    #    torch.utils.flop_counter.FlopCounterMode) and the direct arm's budget; nothing is trained
    .venv/bin/python bench/cascade_vs_direct.py flops --cascade /tmp/emoji_demo
    # 2. copy the cascade's embedder / embeddings / prior and train the direct decoder at 64x64 for that budget
    #    (--max-seconds caps its wall clock; the FLOPs actually reached are then reported)
    .venv/bin/python bench/cascade_vs_direct.py direct --cascade /tmp/emoji_demo --direct /tmp/emoji_direct
    # 3. sample the same seeds from both arms, FID / precision / recall at 64x64 against the held-out emoji
    #    (several --direct runs, e.g. a wall-clock-capped snapshot and the full budget, are scored side by side)
    .venv/bin/python bench/cascade_vs_direct.py eval --cascade /tmp/emoji_demo --direct /tmp/emoji_direct \
        --num 420 --grids docs/cascade

A capped direct run (--max-seconds) stops with a checkpoint; `direct` again without the cap resumes it to the
full budget, and the result is the same run as an uncapped one (the learning rate is constant after warm-up
and every draw depends on the images seen). docs/cascade/report.md has the measured results.

FLOPs: FlopCounterMode counts matrix products, convolutions and attention (forward and backward), not the
elementwise work (normalisation, activations, the optimiser, EMA): the usual "model FLOPs". On the CPU,
scaled_dot_product_attention runs as aten._scaled_dot_product_flash_attention_for_cpu, which torch's table does
not list; this script counts it with torch's own attention formulas (custom_mapping), so attention is in.
One training image of a stage = its loss on a batch of the stage's batch size (one optimiser step's forward and
backward), divided by the batch size; the count is the same for every batch (no data-dependent branches).

Evaluation: FID, precision and recall (k = eval.k) on the penultimate features of the evaluation classifier
(`vcdm.eval.scoring.get_classifier` on the run's training data at 64x64 with the run's EvalConfig; an
emoji-category classifier, not Inception: values compare only among themselves and at equal sample counts;
with --inception FILE, FID on the FID Inception-v3's pool features as well), against the 840 held-out emoji at
64x64 (DataConfig(source="emoji", split="test")). Floors: as many real training images against the same
reference, and one half of the held-out set against the other (a 420-image reference: the same metric, a
smaller reference). A paired bootstrap over seeds (both arms resampled with the same indices) gives the spread
of the FID difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep rather than spin (set before torch loads): see bench/unet_speed.py.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vcdm.errors import VcdmError, exit_status  # noqa: E402

# the direct decoder's U-Net: the cascade decoder's widths, attention at the bottom feature map at 64x64
DIRECT_OVERRIDES = ["decoder.image_size=null", "decoder.net.attn_resolutions=[16]"]
# what the direct arm copies (those the cascade has: y comes from embedder/ or, with a trained CLIP, clip/)
KEEP = ("config.json", "embedder", "clip", "embeddings.safetensors", "prior")


# ---- FLOPs ----


def _cpu_attention_formulas() -> dict[Any, Any]:
    """FlopCounterMode formulas for the CPU's fused attention ops, which torch's table does not list."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    mapping: dict[Any, Any] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):

        def fwd(query, key, value, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop_count(query, key, value)

        def bwd(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
            return sdpa_backward_flop_count(grad_out, query, key, value)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = fwd
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = bwd
    return mapping


def training_flops(kind_name: str, cfg, data, run_dir: str | Path) -> dict[str, Any]:
    """Forward + backward FLOPs per training image of stage `kind_name` under `cfg` (resolved for `data`):
    {"per_image", "batch", "by_op" (per image), "params", "image_size"}."""
    from torch.utils.flop_counter import FlopCounterMode

    from vcdm.runs import RunDir
    from vcdm.stages import get_kind, resolve_for_data
    from vcdm.training.loop import _to_batch

    kind = get_kind(kind_name)
    run = RunDir(run_dir)
    cfg = resolve_for_data(cfg, data, run, [kind.name])
    prep = kind.prepare(cfg, data, run)
    model = kind.build({"kind": kind.name, **prep.meta}).train()
    batch_size = kind.train_config(cfg).batch_size
    batch = _to_batch(prep.tensors, torch.arange(batch_size), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas())
    with counter:
        loss = prep.task.loss(model, batch, gen).float().sum()
        loss.backward()
    total = counter.get_total_flops()
    by_op = {str(op): n / batch_size for op, n in counter.get_flop_counts()["Global"].items()}
    net = prep.meta["net"]
    return {"per_image": total / batch_size, "batch": batch_size, "by_op": by_op,
            "params": sum(p.numel() for p in model.parameters()), "image_size": net["image_size"],
            "channel_mults": net["channel_mults"], "attn_resolutions": net["attn_resolutions"]}  # fmt: skip


def direct_config(cascade_cfg, extra: list[str] | None = None):
    from vcdm.config import apply_overrides

    return apply_overrides(cascade_cfg, DIRECT_OVERRIDES + list(extra or []))


def flop_budget(cascade: str | Path, data=None) -> dict[str, Any]:
    """FLOPs per image of the cascade's decoder (32) and upsampler (64) and of the direct decoder (64); the
    cascade's total training FLOPs (images seen from each stage's model.json) and the direct arm's budget."""
    from vcdm.data import load_dataset
    from vcdm.runs import RunDir

    run = RunDir(cascade)
    cfg = run.load_config()
    data = data if data is not None else load_dataset(cfg.data)
    dec_meta, up_meta = run.stage_meta("decoder"), run.stage_meta("upsampler")
    if dec_meta is None or up_meta is None:
        raise VcdmError(f"{cascade}: needs finished decoder and upsampler exports")
    f_dec32 = training_flops("decoder", cfg, data, cascade)
    f_up64 = training_flops("upsampler", cfg, data, cascade)
    dcfg = direct_config(cfg)
    f_dec64 = training_flops("decoder", dcfg, data, cascade)  # reads the cascade's embeddings only
    n_dec, n_up = int(dec_meta["nimg"]), int(up_meta["nimg"])
    total = n_dec * f_dec32["per_image"] + n_up * f_up64["per_image"]
    batch = dcfg.decoder.train.batch_size
    direct_nimg = int(round(total / f_dec64["per_image"] / batch)) * batch
    return {"f_dec32": f_dec32, "f_up64": f_up64, "f_dec64": f_dec64, "cascade_decoder_nimg": n_dec,
            "cascade_upsampler_nimg": n_up, "cascade_decoder_seconds": dec_meta.get("seconds"),
            "cascade_upsampler_seconds": up_meta.get("seconds"), "cascade_flops": total,
            "cascade_decoder_flops": n_dec * f_dec32["per_image"],
            "cascade_upsampler_flops": n_up * f_up64["per_image"],
            "direct_nimg": direct_nimg, "direct_flops_planned": direct_nimg * f_dec64["per_image"]}  # fmt: skip


# ---- the direct arm ----


def prepare_direct(cascade: Path, direct: Path) -> None:
    """Copy the cascade's config, embedder (or CLIP), embeddings and prior (not its decoder, upsampler or samples)."""
    direct.mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        src, dst = cascade / name, direct / name
        if dst.exists() or not src.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


def measure_speed(cfg, data, run_dir: Path, steps: int = 4) -> float:
    """Images/s of the direct decoder's training step (after one warm-up step), fp32 as configured."""
    from vcdm.runs import RunDir
    from vcdm.stages import get_kind, resolve_for_data
    from vcdm.training.loop import _to_batch

    kind = get_kind("decoder")
    run_dir = RunDir(run_dir)
    cfg = resolve_for_data(cfg, data, run_dir, ["decoder"])
    prep = kind.prepare(cfg, data, run_dir)
    model = kind.build({"kind": "decoder", **prep.meta}).train()
    tc = kind.train_config(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.betas)
    gen = torch.Generator().manual_seed(0)
    t0 = None
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        batch = _to_batch(prep.tensors, torch.randint(len(data), (tc.batch_size,)), torch.device("cpu"))
        opt.zero_grad(set_to_none=True)
        (prep.task.loss(model, batch, gen).mean()).backward()
        opt.step()
    return steps * tc.batch_size / (time.perf_counter() - t0)


def cmd_flops(args) -> dict[str, Any]:
    b = flop_budget(args.cascade)
    print(budget_text(b))
    return b


def budget_text(b: dict[str, Any]) -> str:
    g = 1e9
    lines = []
    for key, what in (("f_dec32", "cascade decoder @32"), ("f_up64", "cascade upsampler @64"),
                      ("f_dec64", "direct decoder @64")):  # fmt: skip
        f = b[key]
        lines.append(f"{what}: {f['per_image'] / g:.3f} GFLOP per training image (fwd+bwd), {f['params']:,} "
                     f"params, mults {f['channel_mults']}, attention at {f['attn_resolutions']}")  # fmt: skip
    lines.append(f"cascade: {b['cascade_decoder_nimg']:,} x {b['f_dec32']['per_image'] / g:.3f} + "
                 f"{b['cascade_upsampler_nimg']:,} x {b['f_up64']['per_image'] / g:.3f} GFLOP = "
                 f"{b['cascade_flops'] / 1e12:.2f} TFLOP")  # fmt: skip
    lines.append(f"direct: {b['direct_nimg']:,} images x {b['f_dec64']['per_image'] / g:.3f} GFLOP = "
                 f"{b['direct_flops_planned'] / 1e12:.2f} TFLOP")  # fmt: skip
    return "\n".join(lines)


def cmd_direct(args) -> dict[str, Any]:
    from vcdm.data import load_dataset
    from vcdm.runs import RunDir
    from vcdm.stages import train_stage

    cascade, direct = Path(args.cascade), Path(args.direct)
    cfg = RunDir(cascade).load_config()
    data = load_dataset(cfg.data)
    b = flop_budget(cascade, data)
    print(budget_text(b), flush=True)
    prepare_direct(cascade, direct)
    extra = [f"decoder.train.total_nimg={b['direct_nimg']}"]
    if args.max_seconds:
        extra.append(f"decoder.train.max_seconds={args.max_seconds}")
    dcfg = direct_config(cfg, extra)
    speed = measure_speed(dcfg, data, direct)
    print(f"direct decoder: {speed:.1f} images/s measured over a few steps now -> the budget would take "
          f"~{b['direct_nimg'] / speed / 60:.0f} min", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    res = train_stage("decoder", direct, dcfg, data, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    out = b | {"direct_measured_img_s": speed, "direct_trained_nimg": res.nimg, "direct_seconds": res.seconds,
               "direct_wall": wall, "direct_stopped_early": res.stopped_early,
               "direct_flops_reached": res.nimg * b["f_dec64"]["per_image"]}  # fmt: skip
    print(f"direct decoder: {res.nimg:,} images in {res.seconds:.0f} s ({res.stopped_early or 'budget reached'}); "
          f"{out['direct_flops_reached'] / 1e12:.2f} TFLOP of the cascade's {b['cascade_flops'] / 1e12:.2f}")  # fmt: skip
    return out


# ---- evaluation ----


def paired_bootstrap(fa: torch.Tensor, fb: torch.Tensor, ref: torch.Tensor, reps: int, seed: int = 0):
    """FID(a) - FID(b) over `reps` resamples of the seeds (the same indices for both arms): (mean, std,
    share of resamples with a < b)."""
    from vcdm.eval.fid import fid_from_features

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(reps):
        idx = torch.from_numpy(rng.integers(0, len(fa), len(fa)))
        diffs.append(fid_from_features(fa[idx], ref) - fid_from_features(fb[idx], ref))
    d = np.asarray(diffs)
    return float(d.mean()), float(d.std()), float((d < 0).mean())


def cmd_eval(args) -> dict[str, Any]:
    from vcdm.data import DataConfig, load_dataset, save_grid
    from vcdm.eval.fid import fid_from_features
    from vcdm.eval.prdc import precision_recall
    from vcdm.eval.scoring import build_reference, classifier_accuracy, get_classifier, score_features
    from vcdm.pipeline import Pipeline
    from vcdm.runs import RunDir

    cfg = RunDir(args.cascade).load_config()
    train = load_dataset(cfg.data)
    test = load_dataset(DataConfig(source="emoji", split="test", image_size=64, channels=3))
    t0 = time.perf_counter()
    extractor, path = get_classifier(train, cfg.eval, progress=not args.no_progress)
    ref = build_reference(extractor, test, train, test)
    k = cfg.eval.k
    out: dict[str, Any] = {"classifier": str(path), "classifier_accuracy": classifier_accuracy(extractor, test),
                           "reference": test.source, "n_reference": len(test), "num": args.num, "rows": {}}  # fmt: skip
    print(f"classifier {path} (accuracy {out['classifier_accuracy']:.3f} on {test.source}), "
          f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    inception = inc_ref = None
    if args.inception:  # the FID Inception-v3 from a local weights file (as `vcdm fid --inception`)
        from vcdm.eval import load_extractor

        inception = load_extractor("inception", args.inception)
        inc_ref = inception.features(test.as_float())
        out["inception"] = str(args.inception)
    seeds = list(range(args.seed, args.seed + args.num))
    sample_cfg = cfg.sample
    feats = {}
    grids = Path(args.grids)
    grids.mkdir(parents=True, exist_ok=True)
    names = args.direct_names or ["direct"] + [f"direct{i}" for i in range(1, len(args.direct))]
    if len(names) != len(args.direct):
        raise VcdmError(f"--direct-names: expected {len(args.direct)} names, got {len(names)}")
    arms = [("cascade", args.cascade, True)] + [
        (n, d, False) for n, d in zip(names, args.direct, strict=True)
    ]
    for arm, run_dir, up in arms:
        pipe = Pipeline.from_run(run_dir, "decoder", upsampler=up)
        out.setdefault("runs", {})[arm] = {
            "path": str(run_dir),
            "nimg": RunDir(run_dir).stage_meta("decoder")["nimg"],
        }
        t0 = time.perf_counter()
        res = pipe(seeds, sample_cfg, progress=not args.no_progress)
        secs = time.perf_counter() - t0
        images = res.images
        save_grid(images[:64], grids / f"{arm}.png", nrow=8)
        if res.low_res is not None and args.low_res_grid:
            save_grid(res.low_res[:64], Path(args.low_res_grid), nrow=8)
        f = extractor.features(images)
        feats[arm] = f
        row = score_features(f, extractor.predict(images), ref, k=k) | {
            "sampling_seconds": secs,
            "shape": list(images.shape[1:]),
        }
        if inception is not None:
            row["fid_inception"] = fid_from_features(inception.features(images), inc_ref)
        out["rows"][arm] = row
        print(f"{arm}: {tuple(images.shape)} in {secs:.0f} s; FID {row['fid']:.2f} precision "
              f"{row['precision']:.3f} recall {row['recall']:.3f} Inception FID {row.get('fid_inception')}",
              flush=True)  # fmt: skip
    # floors: real training images (as many as the samples) against the same reference
    pick = torch.linspace(0, len(train) - 1, args.num).round().long()
    real = train.subset(pick).as_float()
    out["rows"]["real train (floor)"] = score_features(
        extractor.features(real), extractor.predict(real), ref, k=k
    )
    if inception is not None:
        out["rows"]["real train (floor)"]["fid_inception"] = fid_from_features(
            inception.features(real), inc_ref
        )
    # one half of the held-out set against the other (interleaved: the set is ordered by category)
    a, b = ref.features[0::2], ref.features[1::2]
    p, r = precision_recall(b, a, k=k)
    out["half_split_floor"] = {"n": len(a), "n_reference": len(b), "fid": fid_from_features(a, b),
                               "precision": p, "recall": r}  # fmt: skip
    out["bootstrap"] = {}
    for name in names:  # FID(cascade) - FID(direct arm), resampling the seeds of both together
        m, s, share = paired_bootstrap(feats["cascade"], feats[name], ref.features, args.bootstrap)
        out["bootstrap"][name] = {"reps": args.bootstrap, "mean_diff": m, "std_diff": s,
                                  "share_cascade_better": share}  # fmt: skip
    print(json.dumps({k2: v for k2, v in out.items() if k2 != "rows"}, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("flops", "direct", "eval"):
        p = sub.add_parser(name)
        p.add_argument(
            "--cascade", default="/tmp/emoji_demo", help="the finished emoji cascade run (read-only)"
        )
        p.add_argument("--json", default=None, help="write the results here (JSON)")
        p.add_argument("--no-progress", action="store_true")
        if name == "direct":
            p.add_argument("--direct", default="/tmp/emoji_direct", help="the direct arm's run directory")
        if name == "eval":
            p.add_argument(
                "--direct",
                nargs="+",
                default=["/tmp/emoji_direct"],
                help="the direct arm's run directory (several: one arm each)",
            )
            p.add_argument(
                "--direct-names",
                nargs="+",
                default=None,
                help="names of the direct arms (default direct, direct1, ...): grids NAME.png",
            )
        if name == "direct":
            p.add_argument(
                "--max-seconds",
                type=float,
                default=None,
                help="cap the direct decoder's training wall clock (decoder.train.max_seconds)",
            )
        if name == "eval":
            p.add_argument("--num", type=int, default=420, help="samples per arm (seeds --seed ..)")
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--grids", default="docs/cascade", help="where cascade.png / direct.png go")
            p.add_argument(
                "--low-res-grid", default=None, help="also save the cascade's 32x32 base grid here"
            )
            p.add_argument("--bootstrap", type=int, default=200, help="paired bootstrap resamples")
            p.add_argument("--inception", metavar="FILE", help="also FID on the FID Inception-v3's features, "
                           "from this local weights file (see `vcdm fid --inception`)")  # fmt: skip
    args = ap.parse_args(argv)

    def run() -> None:
        t0 = time.perf_counter()
        out = {"flops": cmd_flops, "direct": cmd_direct, "eval": cmd_eval}[args.cmd](args)
        out["command"] = shlex.join(sys.argv)
        out["wall_seconds"] = time.perf_counter() - t0
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")

    return exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
