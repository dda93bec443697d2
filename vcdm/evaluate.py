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
from vcdm.eval.fid import fid_from_features
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
