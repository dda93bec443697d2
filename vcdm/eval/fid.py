"""Frechet distance between Gaussian fits of feature sets (FID), and reference-statistics files.

The matrix square root is taken through symmetric eigendecompositions, not ``scipy.linalg.sqrtm``.
Only the trace of (S1 S2)^(1/2) enters the distance, and it equals the sum of the square roots of the
eigenvalues of the symmetric positive semi-definite matrix S1^(1/2) S2 S1^(1/2), because S1 S2 and that
matrix have the same non-zero eigenvalues. ``eigh`` on symmetric matrices returns real eigenvalues with
errors of about eps * (largest eigenvalue); below a rank threshold they are set to zero, since the
square root would turn a rounding error of 1e-16 into a spurious 1e-8 per dimension. This stays real
and accurate to machine precision when a covariance is singular (fewer images than feature dimensions),
where ``sqrtm(S1 @ S2)`` returns a complex matrix with errors around 1e-7 relative (pytorch-fid then
adds eps * I and discards the imaginary part).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from vcdm.errors import VcdmError

_STATS_KEYS = ("mu", "sigma", "num_images", "extractor")


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Gaussian fit of a feature set, as stored in a reference-statistics ``.npz`` file.

    Attributes:
        mu: (D,) float64 feature mean.
        sigma: (D, D) float64 feature covariance (unbiased, N - 1 in the denominator).
        num_images: how many images the statistics were computed from.
        extractor: name of the feature extractor (FID values are comparable only for the same one).
    """

    mu: np.ndarray
    sigma: np.ndarray
    num_images: int
    extractor: str


def as_feature_array(feats: np.ndarray | torch.Tensor, name: str = "features") -> np.ndarray:
    """Converts a feature set to a float64 numpy array and checks its shape.

    Args:
        feats: (N, D) numpy array or torch tensor (any device and float dtype), N >= 2.
        name: what to call the argument in the error message.

    Returns:
        (N, D) float64 numpy array.
    """
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().to(device="cpu", dtype=torch.float64).numpy()
    array = np.asarray(feats, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise VcdmError(f"{name}: expected an (N, D) feature array with N >= 2, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise VcdmError(f"{name}: expected finite features, found NaN or inf")
    return array


def feature_stats(feats: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set.

    Args:
        feats: (N, D) numpy array or torch tensor, N >= 2.

    Returns:
        mu (D,) float64 and sigma (D, D) float64, the unbiased covariance (as in pytorch-fid).
    """
    array = as_feature_array(feats)
    return array.mean(axis=0), np.cov(array, rowvar=False).reshape(array.shape[1], array.shape[1])


def _check_gaussian(mu, sigma, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise VcdmError(
            f"mu{which}/sigma{which}: expected shapes (D,) and (D, D), got {mu.shape} and {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise VcdmError(f"mu{which}/sigma{which}: expected finite values, found NaN or inf")
    scale = np.abs(sigma).max(initial=0.0)
    if np.abs(sigma - sigma.T).max(initial=0.0) > 1e-8 * scale:
        raise VcdmError(f"sigma{which}: expected a symmetric covariance matrix")
    return mu, sigma


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, via eigendecompositions (see the module docstring)."""
    eps = np.finfo(np.float64).eps
    lam, u = np.linalg.eigh(sigma1)
    # Numerical rank as in numpy.linalg.matrix_rank: S1^(1/2) restricted to its range, (D, r).
    keep = lam > lam.max() * lam.shape[0] * eps
    if not keep.any():
        return 0.0
    w = u[:, keep] * np.sqrt(lam[keep])
    # Same non-zero eigenvalues as S1^(1/2) S2 S1^(1/2), but only (r, r).
    c = w.T @ sigma2 @ w
    ev = np.linalg.eigvalsh(0.5 * (c + c.T))
    ev = np.where(ev > ev.max() * ev.shape[0] * eps, ev, 0.0)
    return float(np.sqrt(ev).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet (2-Wasserstein) distance squared between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) symmetric positive semi-definite covariances (may be singular).

    Returns:
        The distance as a Python float (computed in float64), >= 0.
    """
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "1")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise VcdmError(
            f"mu1/mu2: expected the same feature dimension, got {mu1.shape[0]} and {mu2.shape[0]}"
        )
    diff = mu1 - mu2
    # Dowson & Landau 1982; Heusel et al. 2017 (FID): |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sigma1, sigma2)
    # The exact value is >= 0; rounding can leave about -1e-16 * Tr(S) when the two fits coincide.
    return max(float(value), 0.0)


def fid_from_features(feats1: np.ndarray | torch.Tensor, feats2: np.ndarray | torch.Tensor) -> float:
    """FID between two feature sets.

    Args:
        feats1: (N1, D) features, N1 >= 2.
        feats2: (N2, D) features, N2 >= 2.

    Returns:
        Frechet distance between their Gaussian fits (float).
    """
    mu1, sigma1 = feature_stats(feats1)
    mu2, sigma2 = feature_stats(feats2)
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def save_stats(
    path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, *, num_images: int, extractor: str
) -> None:
    """Writes reference statistics to an ``.npz`` file atomically (temporary file, then os.replace).

    Args:
        path: destination file; its parent directory is created if needed.
        mu: (D,) feature mean.
        sigma: (D, D) feature covariance.
        num_images: number of images behind the statistics, >= 2.
        extractor: non-empty name of the feature extractor.
    """
    mu, sigma = _check_gaussian(mu, sigma, "")
    if isinstance(num_images, bool) or not isinstance(num_images, int | np.integer) or num_images < 2:
        raise VcdmError(f"num_images: expected an integer >= 2, got {num_images!r}")
    if not isinstance(extractor, str) or not extractor:
        raise VcdmError(f"extractor: expected a non-empty string, got {extractor!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma, num_images=np.int64(num_images), extractor=np.str_(extractor))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_stats(path: str | os.PathLike) -> FeatureStats:
    """Reads reference statistics written by `save_stats`.

    Args:
        path: an ``.npz`` file with keys mu (D,), sigma (D, D), num_images (scalar int), extractor (str).

    Returns:
        FeatureStats with float64 arrays. Raises VcdmError naming the file if it is missing, not an npz
        archive, or has a missing key or a wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise VcdmError(f"{path}: reference statistics file not found")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise VcdmError(f"{path}: expected an .npz archive with keys {', '.join(_STATS_KEYS)}")
        with archive:
            missing = [key for key in _STATS_KEYS if key not in archive.files]
            if missing:
                raise VcdmError(
                    f"{path}: missing key {missing[0]!r} (expected keys {', '.join(_STATS_KEYS)})"
                )
            mu, sigma = archive["mu"], archive["sigma"]
            num_images, extractor = archive["num_images"], archive["extractor"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise VcdmError(f"{path}: not a readable .npz statistics file ({reason})") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise VcdmError(f"{path}: expected mu (D,) and sigma (D, D), got shapes {mu.shape} and {sigma.shape}")
    if not (np.issubdtype(mu.dtype, np.floating) and np.issubdtype(sigma.dtype, np.floating)):
        raise VcdmError(f"{path}: expected floating-point mu and sigma, got {mu.dtype} and {sigma.dtype}")
    if num_images.shape != () or not np.issubdtype(num_images.dtype, np.integer):
        raise VcdmError(f"{path}: expected num_images to be a scalar integer, got {num_images!r}")
    if extractor.shape != () or extractor.dtype.kind != "U":
        raise VcdmError(f"{path}: expected extractor to be a string, got {extractor!r}")
    return FeatureStats(
        mu=mu.astype(np.float64),
        sigma=sigma.astype(np.float64),
        num_images=int(num_images),
        extractor=str(extractor),
    )
