"""Scoring sample sets on the evaluation classifier's features: the classifier (trained once per dataset
and config, cached), and FID / precision / recall / class-histogram / memorisation figures, compared only at
equal sample counts (docs/architecture.md, "Evaluation")."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from vcdm.config import EvalConfig, RunConfig, to_dict
from vcdm.data import ImageData
from vcdm.eval.classes import histogram_distance_from_uniform
from vcdm.eval.classifier import ClassifierExtractor, accuracy
from vcdm.eval.fid import fid_from_features
from vcdm.eval.memorization import near_copy_fraction, nearest_neighbour_distances
from vcdm.eval.prdc import precision_recall
from vcdm.fileio import cache_dir
from vcdm.runs import RunDir
from vcdm.training import distributed as dist


def fingerprint(data: ImageData) -> str:
    """12 hex digits of a SHA-256 over the images and labels: a dataset's identity for caches."""
    h = hashlib.sha256(data.images.numpy().tobytes())
    if data.labels is not None:
        h.update(data.labels.numpy().tobytes())
    return h.hexdigest()[:12]


def get_classifier(
    data: ImageData, cfg: EvalConfig, *, progress: bool = True
) -> tuple[ClassifierExtractor, Path]:
    """The evaluation classifier for `data`: loaded from the user cache, or trained once and cached there.

    The cache key covers the dataset's content and the classifier's config and training config. The cached
    classifier is a run directory holding the "classifier" stage (trained by the generic stage path);
    returns (extractor, its stage directory).
    """
    from vcdm.stages import train_stage

    key = hashlib.sha256(json.dumps([fingerprint(data), to_dict(cfg.classifier), to_dict(cfg.classifier_train)],
                                    sort_keys=True).encode()).hexdigest()[:16]  # fmt: skip
    run = RunDir(cache_dir() / "classifiers" / key)
    stage = run.stage("classifier")
    if run.stage_meta("classifier") is None:
        if dist.rank() == 0:
            tmp = run.path.with_name(f".{key}.{secrets.token_hex(4)}.tmp")
            try:
                train_stage(
                    "classifier", tmp, RunConfig(eval=cfg), data, progress=progress, save_config=False
                )
                shutil.rmtree(run.path, ignore_errors=True)  # a partial entry from an older version
                os.replace(tmp, run.path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        dist.barrier()
    return ClassifierExtractor.from_file(stage), stage


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
