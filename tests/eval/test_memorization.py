import numpy as np
import pytest
import torch

from vcdm.errors import VcdmError
from vcdm.eval.memorization import near_copy_fraction, nearest_neighbour_distances, nn_distance_summary


def test_nearest_neighbour_distances_match_brute_force():
    rng = np.random.default_rng(0)
    query, reference = rng.standard_normal((30, 6)), rng.standard_normal((20, 6))
    full = np.linalg.norm(query[:, None] - reference[None], axis=-1)
    got = nearest_neighbour_distances(query, reference, batch_size=7)
    assert got.shape == (30,) and got.dtype == np.float64
    np.testing.assert_allclose(got, full.min(axis=1), rtol=1e-10)
    # Torch input (float32) gives the same answer up to float32 rounding of the inputs.
    got32 = nearest_neighbour_distances(torch.from_numpy(query).float(), torch.from_numpy(reference).float())
    np.testing.assert_allclose(got32, full.min(axis=1), rtol=1e-5)


def test_exclude_self_skips_the_point_itself():
    reference = np.random.default_rng(1).standard_normal((25, 4))
    assert np.all(nearest_neighbour_distances(reference, reference) == 0.0)
    full = np.linalg.norm(reference[:, None] - reference[None], axis=-1)
    np.fill_diagonal(full, np.inf)
    got = nearest_neighbour_distances(reference, reference, exclude_self=True, batch_size=4)
    np.testing.assert_allclose(got, full.min(axis=1), rtol=1e-10)
    with pytest.raises(VcdmError, match="exclude_self"):
        nearest_neighbour_distances(reference[:5], reference, exclude_self=True)


def test_near_copy_fraction_detects_copies_and_not_fresh_samples():
    rng = np.random.default_rng(2)
    d = 16
    train = rng.standard_normal((2000, d))
    heldout = rng.standard_normal((2000, d))
    heldout_nn = nearest_neighbour_distances(heldout, train)

    copies = train[:500] + 1e-3 * rng.standard_normal((500, d))
    assert near_copy_fraction(nearest_neighbour_distances(copies, train), heldout_nn) == 1.0

    # Other images from the training distribution: 1% by construction of the threshold. The standard
    # error is about sqrt(0.01 * 0.99 / 2000) = 0.0022 from the held-out percentile plus
    # sqrt(0.01 * 0.99 / 4000) = 0.0016 from counting the samples, ~0.0027 in all; 0.01 is ~3.7 sd.
    fresh = rng.standard_normal((4000, d))
    fraction = near_copy_fraction(nearest_neighbour_distances(fresh, train), heldout_nn)
    assert fraction == pytest.approx(0.01, abs=0.01)
    assert near_copy_fraction(nearest_neighbour_distances(fresh, train), heldout_nn, percentile=10.0) == (
        pytest.approx(0.10, abs=0.03)
    )


def test_near_copy_fraction_threshold_is_strict():
    heldout_nn = np.arange(1.0, 101.0)  # 1st percentile = 1.99
    assert near_copy_fraction(np.array([1.0, 1.98, 1.99, 5.0]), heldout_nn) == 0.5


def test_nn_distance_summary():
    d = np.random.default_rng(3).exponential(size=1000)
    summary = nn_distance_summary(d)
    assert set(summary) == {"mean", "median", "p1", "p5"}
    assert all(isinstance(v, float) for v in summary.values())
    assert summary["mean"] == pytest.approx(d.mean())
    assert summary["median"] == pytest.approx(np.median(d))
    assert summary["p1"] == pytest.approx(np.percentile(d, 1)) and summary["p5"] == pytest.approx(
        np.percentile(d, 5)
    )
    assert summary["p1"] <= summary["p5"] <= summary["median"]


def test_bad_inputs_raise():
    with pytest.raises(VcdmError, match="percentile"):
        near_copy_fraction(np.ones(3), np.ones(3), percentile=0.0)
    with pytest.raises(VcdmError, match="sample_nn"):
        near_copy_fraction(np.ones((3, 2)), np.ones(3))
    with pytest.raises(VcdmError, match="heldout_nn"):
        near_copy_fraction(np.ones(3), np.array([1.0, -1.0]))
    with pytest.raises(VcdmError, match="same feature dimension"):
        nearest_neighbour_distances(np.ones((3, 2)), np.ones((3, 4)))
    with pytest.raises(VcdmError, match="d:"):
        nn_distance_summary(np.array([]))
