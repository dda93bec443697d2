"""Improved precision and recall of generative models (Kynkaanniemi et al. 2019), on feature sets.

Pairwise distances are computed in float64 with ``torch.cdist`` on row blocks of the query set, so only a
(batch_size, N) distance block is held at a time: 10k x 10k features of dimension 2048 need about 80 MB
per block instead of 800 MB for the full matrix. Tensors on a GPU stay there.
"""

from __future__ import annotations

import numpy as np
import torch

from vcdm.errors import VcdmError


def as_feature_tensor(feats: np.ndarray | torch.Tensor, name: str = "features") -> torch.Tensor:
    """Converts a feature set to a float64 tensor (on the tensor's own device) and checks its shape.

    Args:
        feats: (N, D) numpy array or torch tensor, N >= 1.
        name: what to call the argument in the error message.

    Returns:
        (N, D) float64 tensor.
    """
    if isinstance(feats, torch.Tensor):
        tensor = feats.detach().to(torch.float64)
    else:
        tensor = torch.as_tensor(np.asarray(feats, dtype=np.float64))
    if tensor.ndim != 2 or tensor.shape[0] < 1 or tensor.shape[1] < 1:
        raise VcdmError(
            f"{name}: expected an (N, D) feature array with N >= 1, got shape {tuple(tensor.shape)}"
        )
    if not torch.isfinite(tensor).all():
        raise VcdmError(f"{name}: expected finite features, found NaN or inf")
    return tensor


def as_feature_pair(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, names: tuple[str, str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two feature sets as float64 tensors on a's device, checked to share their feature dimension."""
    a_t = as_feature_tensor(a, names[0])
    b_t = as_feature_tensor(b, names[1]).to(a_t.device)
    if a_t.shape[1] != b_t.shape[1]:
        raise VcdmError(
            f"{names[0]}/{names[1]}: expected the same feature dimension, got {a_t.shape[1]} and {b_t.shape[1]}"
        )
    return a_t, b_t


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise VcdmError(f"batch_size: expected a positive integer, got {batch_size!r}")


def kth_nearest_distances(
    query: torch.Tensor,
    reference: torch.Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Euclidean distance from each query point to its k-th nearest reference point.

    Args:
        query: (Nq, D) float64 tensor.
        reference: (Nr, D) float64 tensor on the same device.
        k: neighbour rank, 1 <= k <= Nr (Nr - 1 with exclude_self).
        exclude_self: query and reference are the same set; row i never counts itself (reference i).
        batch_size: query rows per distance block.

    Returns:
        (Nq,) float64 tensor of distances.
    """
    _check_batch_size(batch_size)
    num_query, num_ref = query.shape[0], reference.shape[0]
    if exclude_self and num_query != num_ref:
        raise VcdmError(
            f"exclude_self needs query and reference to be one set, got {num_query} and {num_ref} rows"
        )
    available = num_ref - int(exclude_self)
    if not 1 <= k <= available:
        raise VcdmError(f"k: expected 1 <= k <= {available} (reference points available), got {k}")
    out = torch.empty(num_query, dtype=torch.float64, device=query.device)
    for start in range(0, num_query, batch_size):
        stop = min(start + batch_size, num_query)
        dist = torch.cdist(query[start:stop], reference)  # (b, Nr)
        if exclude_self:
            rows = torch.arange(stop - start, device=dist.device)
            dist[rows, rows + start] = torch.inf
        # topk is several times faster than kthvalue for small k on CPU.
        out[start:stop] = dist.topk(k, dim=1, largest=False).values[:, k - 1]
    return out


def _fraction_in_balls(
    points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_size: int
) -> float:
    """Fraction of points lying in at least one closed ball (centres (M, D), radii (M,))."""
    inside = 0
    for start in range(0, points.shape[0], batch_size):
        dist = torch.cdist(points[start : start + batch_size], centres)  # (b, M)
        inside += int((dist <= radii[None, :]).any(dim=1).sum())
    return inside / points.shape[0]


def precision_recall(
    real_feats: np.ndarray | torch.Tensor,
    fake_feats: np.ndarray | torch.Tensor,
    k: int = 3,
    *,
    batch_size: int = 1024,
) -> tuple[float, float]:
    """Improved precision and recall from k-nearest-neighbour manifolds (Kynkaanniemi et al. 2019).

    Args:
        real_feats: (N_real, D) features of real images, N_real > k.
        fake_feats: (N_fake, D) features of generated images, N_fake > k.
        k: neighbour rank defining each point's ball radius (the paper uses 3).
        batch_size: rows per pairwise-distance block (memory is batch_size x N float64).

    Returns:
        (precision, recall), each in [0, 1].
    """
    real, fake = as_feature_pair(real_feats, fake_feats, ("real_feats", "fake_feats"))
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise VcdmError(f"k: expected a positive integer, got {k!r}")
    if min(real.shape[0], fake.shape[0]) <= k:
        raise VcdmError(
            f"precision_recall: expected more than k={k} real and fake samples, "
            f"got {real.shape[0]} and {fake.shape[0]}"
        )
    # Kynkaanniemi et al. 2019, Sec. 2: a sample is on the other set's manifold if it lies within the
    # k-th-NN radius (measured inside that set, excluding the point itself) of at least one of its points.
    real_radii = kth_nearest_distances(real, real, k, exclude_self=True, batch_size=batch_size)
    fake_radii = kth_nearest_distances(fake, fake, k, exclude_self=True, batch_size=batch_size)
    precision = _fraction_in_balls(fake, real, real_radii, batch_size)
    recall = _fraction_in_balls(real, fake, fake_radii, batch_size)
    return precision, recall
