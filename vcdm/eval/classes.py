"""Class balance of generated samples, from a classifier's predicted labels.

A conditional or class-agnostic generator trained on a balanced dataset should cover every class about
equally; mode dropping shows up as a histogram far from uniform.
"""

from __future__ import annotations

import numpy as np
import torch

from vcdm.errors import VcdmError


def _as_labels(pred_labels: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise VcdmError(f"num_classes: expected a positive integer, got {num_classes!r}")
    if isinstance(pred_labels, torch.Tensor):
        pred_labels = pred_labels.detach().cpu().numpy()
    labels = np.asarray(pred_labels)
    if labels.ndim != 1 or labels.shape[0] == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise VcdmError(
            "pred_labels: expected a non-empty 1-D integer array, "
            f"got shape {labels.shape} dtype {labels.dtype}"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise VcdmError(
            f"pred_labels: expected class indices in [0, {num_classes}), "
            f"got values from {labels.min()} to {labels.max()}"
        )
    return labels.astype(np.int64)


def class_histogram(pred_labels: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray:
    """Normalised histogram of predicted class labels.

    Args:
        pred_labels: (N,) integer class indices in [0, num_classes), numpy or torch.
        num_classes: number of classes K >= 1.

    Returns:
        (K,) float64 array of class frequencies summing to 1.
    """
    labels = _as_labels(pred_labels, num_classes)
    return np.bincount(labels, minlength=num_classes) / labels.shape[0]


def histogram_distance_from_uniform(pred_labels: np.ndarray | torch.Tensor, num_classes: int) -> float:
    """Total variation distance between the predicted-class histogram and the uniform distribution.

    Args:
        pred_labels: (N,) integer class indices in [0, num_classes), numpy or torch.
        num_classes: number of classes K >= 1.

    Returns:
        TV = 0.5 * sum_c |h_c - 1/K|, in [0, 1 - 1/K]: 0 for perfectly balanced predictions, 1 - 1/K when
        every prediction is the same class.
    """
    hist = class_histogram(pred_labels, num_classes)
    return float(0.5 * np.abs(hist - 1.0 / num_classes).sum())
