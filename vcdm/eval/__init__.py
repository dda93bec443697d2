"""Evaluation: feature extractors and the metrics computed on their features."""

from vcdm.eval.classes import class_histogram, histogram_distance_from_uniform
from vcdm.eval.features import FeatureExtractor, load_extractor
from vcdm.eval.fid import (
    FeatureStats,
    feature_stats,
    fid_from_features,
    frechet_distance,
    load_stats,
    save_stats,
)
from vcdm.eval.memorization import near_copy_fraction, nearest_neighbour_distances, nn_distance_summary
from vcdm.eval.prdc import precision_recall

__all__ = [
    "FeatureExtractor",
    "FeatureStats",
    "class_histogram",
    "feature_stats",
    "fid_from_features",
    "frechet_distance",
    "histogram_distance_from_uniform",
    "load_extractor",
    "load_stats",
    "near_copy_fraction",
    "nearest_neighbour_distances",
    "nn_distance_summary",
    "precision_recall",
    "save_stats",
]
