import numpy as np
import pytest
import scipy.linalg
import torch

from vcdm.errors import VcdmError
from vcdm.eval.fid import (
    FeatureStats,
    feature_stats,
    fid_from_features,
    frechet_distance,
    load_stats,
    save_stats,
)


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * rng.uniform(0.5, 2.0, d)) @ q.T


def test_feature_stats_matches_numpy_and_accepts_torch():
    x = np.random.default_rng(0).standard_normal((50, 6))
    mu, sigma = feature_stats(torch.from_numpy(x).float())
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    assert mu.shape == (6,) and sigma.shape == (6, 6)
    np.testing.assert_allclose(mu, x.mean(0), atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), atol=1e-6)


def test_fid_of_a_set_against_itself_is_zero():
    x = np.random.default_rng(1).standard_normal((500, 32)) * 3.0 + 1.0
    fid = fid_from_features(x, x)
    assert 0.0 <= fid < 1e-6 * np.trace(np.cov(x, rowvar=False))


def test_fid_matches_closed_form_for_gaussian_samples():
    rng = np.random.default_rng(2)
    n, d = 20_000, 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    var1, var2 = np.array([1.0, 2.0, 0.5, 1.5]), np.array([2.0, 0.5, 1.0, 1.5])
    # Same random rotation for both sets: the covariances are not diagonal in feature coordinates, but
    # FID is rotation-invariant, so the closed form for commuting (diagonal) covariances still holds.
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    x = (mu1 + rng.standard_normal((n, d)) * np.sqrt(var1)) @ q
    y = (mu2 + rng.standard_normal((n, d)) * np.sqrt(var2)) @ q
    diff = mu1 - mu2
    expected = diff @ diff + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)  # = 6.007
    # Tolerance: the sampling error is dominated by the mean term, whose estimate has standard deviation
    # about 2 * sqrt(diff^T (S1 + S2) diff / n) = 0.056 here (0.051 measured over 50 seeds); the upward
    # bias Tr(S1 + S2) / n = 5e-4 and the covariance term's error (~sqrt(d / n)) are smaller. 0.25 ~ 4.5 sd.
    assert fid_from_features(x, y) == pytest.approx(expected, abs=0.25)


def test_translation_changes_fid_by_exactly_squared_norm():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 8))
    y = rng.standard_normal((200, 8)) * 1.5
    v = rng.standard_normal(8) * 2.0
    assert fid_from_features(x, x + v) == pytest.approx(v @ v, rel=1e-8)
    # Moving both sets by the same vector leaves the distance unchanged.
    assert fid_from_features(x + v, y + v) == pytest.approx(fid_from_features(x, y), rel=1e-8)


def test_frechet_distance_is_symmetric():
    rng = np.random.default_rng(4)
    mu1, mu2 = rng.standard_normal(12), rng.standard_normal(12)
    s1, s2 = _random_spd(rng, 12), _random_spd(rng, 12)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_when_well_conditioned():
    rng = np.random.default_rng(5)
    for d in (1, 3, 16):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
        diff = mu1 - mu2
        reference = diff @ diff + np.trace(s1 + s2) - 2.0 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-10)


def test_singular_covariances_give_exact_finite_distance():
    # N < D: both covariances have rank N - 1.
    rng = np.random.default_rng(6)
    n, d = 12, 64
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((n, d)) * 2.0 + 0.5
    (mu1, s1), (mu2, s2) = feature_stats(x), feature_stats(y)
    # Exact reference: with centred features A, B, the non-zero eigenvalues of S1 S2 = A^T A B^T B / (n-1)^2
    # are those of (A B^T)(A B^T)^T / (n-1)^2, so Tr (S1 S2)^(1/2) is the nuclear norm of A B^T / (n - 1).
    a, b = x - mu1, y - mu2
    trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / (n - 1)
    diff = mu1 - mu2
    exact = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt
    fid = fid_from_features(x, y)
    assert np.isfinite(fid) and fid >= 0.0
    assert fid == pytest.approx(exact, rel=1e-10)
    # The naive route is complex here (scipy's Schur-based sqrtm of a singular, non-symmetric product);
    # its real part is only accurate to about 1e-7.
    naive = scipy.linalg.sqrtm(s1 @ s2)
    assert np.iscomplexobj(naive) and np.abs(naive.imag).max() > 0.0
    # A singular set against itself is still ~0, not a negative or NaN value.
    assert 0.0 <= fid_from_features(x, x) < 1e-8 * np.trace(s1)


def test_constant_features_give_zero_covariance_distance():
    x = np.ones((5, 3))
    assert fid_from_features(x, x + 2.0) == pytest.approx(12.0, rel=1e-12)


@pytest.mark.parametrize(
    "feats1, feats2",
    [
        (np.zeros(10), np.zeros((10, 3))),  # 1-D
        (np.zeros((1, 3)), np.zeros((10, 3))),  # N < 2
        (np.zeros((10, 3)), np.zeros((10, 4))),  # feature dimensions differ
        (np.full((10, 3), np.nan), np.zeros((10, 3))),  # not finite
    ],
)
def test_bad_feature_shapes_raise(feats1, feats2):
    with pytest.raises(VcdmError):
        fid_from_features(feats1, feats2)


def test_bad_gaussian_parameters_raise():
    with pytest.raises(VcdmError, match=r"\(D,\) and \(D, D\)"):
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))
    with pytest.raises(VcdmError, match="symmetric"):
        frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    mu, sigma = feature_stats(rng.standard_normal((40, 5)))
    path = tmp_path / "sub" / "ref.npz"
    save_stats(path, mu, sigma, num_images=40, extractor="inception-v3")
    stats = load_stats(path)
    assert isinstance(stats, FeatureStats)
    np.testing.assert_array_equal(stats.mu, mu)
    np.testing.assert_array_equal(stats.sigma, sigma)
    assert stats.num_images == 40 and stats.extractor == "inception-v3"
    # Atomic write: only the final file remains; overwriting works.
    save_stats(path, mu + 1.0, sigma, num_images=41, extractor="clip")
    assert [p.name for p in path.parent.iterdir()] == ["ref.npz"]
    assert load_stats(path).num_images == 41


def test_save_stats_validates_arguments(tmp_path):
    with pytest.raises(VcdmError, match="num_images"):
        save_stats(tmp_path / "a.npz", np.zeros(2), np.eye(2), num_images=1, extractor="x")
    with pytest.raises(VcdmError, match="extractor"):
        save_stats(tmp_path / "a.npz", np.zeros(2), np.eye(2), num_images=10, extractor="")
    assert not list(tmp_path.iterdir())


def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_load_stats_errors_name_the_file(tmp_path):
    good = {"mu": np.zeros(3), "sigma": np.eye(3), "num_images": np.int64(5), "extractor": np.str_("x")}
    cases = {}
    cases["missing.npz"] = None
    cases["garbage.npz"] = b"this is not an npz archive"
    cases["empty.npz"] = b""
    cases["no_sigma.npz"] = {k: v for k, v in good.items() if k != "sigma"}
    cases["bad_shape.npz"] = {**good, "sigma": np.eye(3)[:, :2]}
    cases["bad_count.npz"] = {**good, "num_images": np.zeros(2)}
    cases["bad_name.npz"] = {**good, "extractor": np.int64(3)}
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, dict):
            _write_npz(path, **content)
        with pytest.raises(VcdmError) as info:
            load_stats(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), name
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(VcdmError, match="expected an .npz archive"):
        load_stats(npy)
