"""Scoring sample sets: the evaluation classifier (trained once, cached) and FID / precision / recall /
class-histogram / memorisation figures, compared only at equal sample counts (DESIGN.md section 6)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vcdm.config import EvalConfig, to_dict
from vcdm.data import ImageData
from vcdm.errors import VcdmError
from vcdm.eval.classes import histogram_distance_from_uniform
from vcdm.eval.classifier import (
    Classifier,
    ClassifierExtractor,
    ClassifierTask,
    accuracy,
    load_classifier,
    save_classifier,
)
from vcdm.eval.fid import FeatureStats, feature_stats, fid_from_features, frechet_distance
from vcdm.eval.memorization import near_copy_fraction, nearest_neighbour_distances
from vcdm.eval.prdc import precision_recall
from vcdm.training import distributed as dist
from vcdm.training import train
from vcdm.training.loop import mix_seed


def cache_dir() -> Path:
    """vcdm's user cache: $VCDM_CACHE_DIR, else $XDG_CACHE_HOME/vcdm, else ~/.cache/vcdm."""
    if os.environ.get("VCDM_CACHE_DIR"):
        return Path(os.environ["VCDM_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vcdm"


def fingerprint(data: ImageData) -> str:
    """12 hex digits of a SHA-256 over the images and labels: a dataset's identity for caches."""
    h = hashlib.sha256(data.images.numpy().tobytes())
    if data.labels is not None:
        h.update(data.labels.numpy().tobytes())
    return h.hexdigest()[:12]


def train_classifier(
    data: ImageData, cfg: EvalConfig, out_dir: str | Path, *, progress: bool = True
) -> Classifier:
    """Train the evaluation classifier on a labelled dataset with the shared loop; returns its EMA model."""
    if data.labels is None:
        raise VcdmError(
            f"{data.source}: the evaluation classifier needs class labels (class subfolders or npz labels)"
        )
    from dataclasses import replace

    _, c, h, _ = data.images.shape
    clf_cfg = replace(cfg.classifier, image_size=h, in_channels=c, num_classes=data.num_classes)
    torch.manual_seed(mix_seed(cfg.classifier_train.seed, 0xC1))
    model = Classifier(clf_cfg)
    res = train(model, ClassifierTask(), {"image": data.images, "label": data.labels}, cfg.classifier_train,
                out_dir, meta={"kind": "classifier", "net": to_dict(clf_cfg)}, progress=progress,
                desc="classifier")  # fmt: skip
    return res.ema.eval()


def get_classifier(
    data: ImageData, cfg: EvalConfig, *, progress: bool = True
) -> tuple[ClassifierExtractor, Path]:
    """The evaluation classifier for `data`: loaded from the user cache, or trained once and cached there.

    The cache key covers the dataset's content and the classifier's config and training config.
    """
    key = hashlib.sha256(json.dumps([fingerprint(data), to_dict(cfg.classifier), to_dict(cfg.classifier_train)],
                                    sort_keys=True).encode()).hexdigest()[:16]  # fmt: skip
    path = cache_dir() / "classifiers" / f"{key}.safetensors"
    if not path.is_file():
        if dist.rank() == 0:
            with tempfile.TemporaryDirectory(prefix="vcdm-classifier-") as tmp:
                save_classifier(train_classifier(data, cfg, tmp, progress=progress), path)
        dist.barrier()
    return ClassifierExtractor(load_classifier(path)), path


@dataclass
class Reference:
    """Features of the real images a sample set is scored against, computed once."""

    features: Tensor  # the FID / precision-recall reference set (N_ref, D)
    train_features: Tensor  # the training set, for nearest-neighbour (memorisation) distances
    heldout_nn: np.ndarray  # held-out real images' nearest-training-image distances (the near-copy threshold)
    heldout_features: Tensor  # held-out real images, scored like samples: the metric's floor
    num_classes: int


def build_reference(extractor: ClassifierExtractor, reference: ImageData, train_data: ImageData,
                    heldout: ImageData) -> Reference:  # fmt: skip
    """Extract the features of the reference, training and held-out sets."""
    ref = extractor.features(reference.as_float())
    tr = extractor.features(train_data.as_float())
    ho = extractor.features(heldout.as_float())
    return Reference(ref, tr, nearest_neighbour_distances(ho, tr), ho, max(train_data.num_classes, 1))


def score(images: Tensor, extractor: ClassifierExtractor, ref: Reference, *, k: int = 3) -> dict[str, float]:
    """FID, precision, recall, class-histogram distance from uniform and near-copy fraction of a sample set.

    images: float32 [-1, 1] (N, C, H, W). Figures are comparable only between sets of the same N.
    """
    feats = extractor.features(images)
    return score_features(feats, extractor.predict(images), ref, k=k)


def score_features(feats: Tensor, predicted: Tensor, ref: Reference, *, k: int = 3) -> dict[str, float]:
    """`score` on precomputed features and predicted classes."""
    precision, recall = precision_recall(ref.features, feats, k=k)
    nn = nearest_neighbour_distances(feats, ref.train_features)
    return {
        "n": len(feats),
        "fid": fid_from_features(feats, ref.features),
        "precision": precision,
        "recall": recall,
        "class_tv": histogram_distance_from_uniform(predicted, ref.num_classes),
        "nn_median": float(np.median(nn)),
        "near_copy": near_copy_fraction(nn, ref.heldout_nn),
    }


def classifier_accuracy(extractor: ClassifierExtractor, data: ImageData) -> float:
    return accuracy(extractor.model, data.as_float(), data.labels)


# ---- `vcdm fid`: features of an image folder, an .npz, a statistics file or a run directory ----


@dataclass
class FeatureSet:
    """Features of one side of a FID comparison, or only their Gaussian statistics (a stats file)."""

    source: str
    features: Tensor | None  # (N, D), None when only statistics are known
    stats: FeatureStats | None = None

    @property
    def num(self) -> int:
        return len(self.features) if self.features is not None else self.stats.num_images

    def gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        if self.features is not None:
            return feature_stats(self.features)
        return self.stats.mu, self.stats.sigma


def _expected_shape(extractor) -> tuple[int | None, int | None]:
    """(image_size, channels) the extractor needs, or (None, None) when it resizes itself (Inception)."""
    cfg = getattr(getattr(extractor, "model", None), "cfg", None)
    return (cfg.image_size, cfg.in_channels) if cfg is not None else (None, 3)


def load_feature_set(
    source: str | Path,
    extractor,
    *,
    num: int | None = None,
    seed: int = 0,
    stage: str = "decoder",
    sample_cfg=None,
) -> FeatureSet:
    """Features of `source`: a run directory (samples `num` images from it, seeds seed..seed+num-1), an image
    folder, an .npz of images, an .npz of statistics (`save_stats`), or "mnist[:split]" (embedded)."""
    from vcdm.data import load_image_folder, load_mnist, load_npz
    from vcdm.eval.fid import load_stats

    source = str(source)
    path = Path(source)
    size, channels = _expected_shape(extractor)
    if source.startswith("mnist") and not path.exists():
        split = source.split(":", 1)[1] if ":" in source else "test"
        images = load_mnist(split, image_size=size, channels=channels, limit=num).as_float()
    elif path.is_dir() and (path / "config.json").is_file():
        from vcdm.pipeline import Pipeline

        if not num:
            raise VcdmError(f"{path} is a run directory: pass --num, the number of images to sample from it")
        images = Pipeline.from_run(path, stage)(range(seed, seed + num), sample_cfg).images
    elif path.is_dir():
        images = load_image_folder(path, image_size=size, channels=channels, limit=num).as_float()
    elif path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            is_stats = "mu" in z.files and "sigma" in z.files
        if is_stats:
            stats = load_stats(path)
            if stats.extractor != extractor.name:
                raise VcdmError(
                    f"{path}: statistics were computed with {stats.extractor!r}, not {extractor.name!r}"
                )
            return FeatureSet(source, None, stats)
        images = load_npz(path, image_size=size, channels=channels, limit=num).as_float()
    else:
        raise VcdmError(f"{source}: expected a run directory, an image folder, an .npz or 'mnist[:split]'")
    return FeatureSet(source, extractor.features(images))


def compare(a: FeatureSet, b: FeatureSet, *, k: int = 3) -> dict[str, float]:
    """FID between two feature sets (and precision / recall of `a` against `b` when both have features)."""
    mu1, s1 = a.gaussian()
    mu2, s2 = b.gaussian()
    out = {"fid": frechet_distance(mu1, s1, mu2, s2), "n_a": a.num, "n_b": b.num}
    if a.features is not None and b.features is not None:
        out["precision"], out["recall"] = precision_recall(b.features, a.features, k=k)
    return out
