"""Memorisation checks: how close generated images come to their nearest training image.

A sample is a *near copy* when its nearest training image is closer than almost all held-out real
images are to theirs: the threshold is a low percentile of the held-out nearest-neighbour distances, so
a model that does not copy gets about `percentile` percent near copies, and a copying model gets more.
Distances are Euclidean, in whatever feature space the caller chose (Inception, CLIP, DINOv2 or pixels).
"""

from __future__ import annotations

import numpy as np
import torch

from vcdm.errors import VcdmError
from vcdm.eval.prdc import as_feature_pair, kth_nearest_distances


def nearest_neighbour_distances(
    query: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    *,
    exclude_self: bool = False,
    batch_size: int = 1024,
) -> np.ndarray:
    """Euclidean distance from each query feature to its nearest reference feature.

    Args:
        query: (Nq, D) features (numpy or torch, any float dtype; computed in float64).
        reference: (Nr, D) features, e.g. of the training set.
        exclude_self: query and reference are the same set (Nq == Nr); row i skips reference i.
        batch_size: query rows per distance block (memory is batch_size x Nr float64).

    Returns:
        (Nq,) float64 numpy array.
    """
    query_t, reference_t = as_feature_pair(query, reference, ("query", "reference"))
    dist = kth_nearest_distances(query_t, reference_t, 1, exclude_self=exclude_self, batch_size=batch_size)
    return dist.cpu().numpy()


def _as_distances(d: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(d, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] == 0:
        raise VcdmError(f"{name}: expected a non-empty 1-D array of distances, got shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise VcdmError(f"{name}: expected finite non-negative distances")
    return array


def near_copy_fraction(sample_nn: np.ndarray, heldout_nn: np.ndarray, percentile: float = 1.0) -> float:
    """Fraction of samples closer to the training set than the `percentile`-th held-out NN distance.

    Args:
        sample_nn: (Ns,) nearest-training-image distance of each generated sample.
        heldout_nn: (Nh,) nearest-training-image distance of each held-out real image (same feature space).
        percentile: threshold percentile of `heldout_nn`, in (0, 100).

    Returns:
        Fraction in [0, 1]; about percentile / 100 for samples distributed like the held-out images.
    """
    sample_nn = _as_distances(sample_nn, "sample_nn")
    heldout_nn = _as_distances(heldout_nn, "heldout_nn")
    if not 0.0 < percentile < 100.0:
        raise VcdmError(f"percentile: expected a value in (0, 100), got {percentile!r}")
    threshold = np.percentile(heldout_nn, percentile)
    return float(np.mean(sample_nn < threshold))


def nn_distance_summary(d: np.ndarray) -> dict[str, float]:
    """Summary of nearest-neighbour distances for reports.

    Args:
        d: (N,) non-negative distances.

    Returns:
        {"mean", "median", "p1", "p5"} as floats (p1/p5: 1st and 5th percentiles).
    """
    d = _as_distances(d, "d")
    p1, median, p5 = np.percentile(d, [1.0, 50.0, 5.0])
    return {"mean": float(d.mean()), "median": float(median), "p1": float(p1), "p5": float(p5)}
