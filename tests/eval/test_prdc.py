import numpy as np
import pytest
import torch

from vcdm.errors import VcdmError
from vcdm.eval.prdc import kth_nearest_distances, precision_recall


def _modes(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    """n points split evenly over the given well-separated unit-variance Gaussian modes."""
    return np.repeat(centres, n // len(centres), axis=0) + rng.standard_normal((n, centres.shape[1]))


def test_kth_nearest_distances_match_brute_force():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((37, 5)))
    ref = torch.from_numpy(rng.standard_normal((23, 5)))
    full = np.linalg.norm(x.numpy()[:, None] - ref.numpy()[None], axis=-1)
    for k in (1, 3):
        got = kth_nearest_distances(x, ref, k, batch_size=8)
        np.testing.assert_allclose(got.numpy(), np.sort(full, axis=1)[:, k - 1], rtol=1e-10)
    # exclude_self: the point itself (distance 0) never counts as a neighbour.
    self_full = np.linalg.norm(x.numpy()[:, None] - x.numpy()[None], axis=-1)
    np.fill_diagonal(self_full, np.inf)
    got = kth_nearest_distances(x, x, 3, exclude_self=True, batch_size=10)
    np.testing.assert_allclose(got.numpy(), np.sort(self_full, axis=1)[:, 2], rtol=1e-10)


def test_identical_sets_have_full_precision_and_recall():
    x = np.random.default_rng(1).standard_normal((200, 8))
    assert precision_recall(x, x.copy()) == (1.0, 1.0)


def test_far_apart_sets_have_zero_precision_and_recall():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((200, 8))
    fake = rng.standard_normal((150, 8)) + 1000.0
    assert precision_recall(real, fake) == (0.0, 0.0)


def test_half_the_modes_halves_recall_but_keeps_precision():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((4, 2)) * 100.0
    real = _modes(rng, centres, 800)
    fake = _modes(rng, centres[:2], 800)
    precision, recall = precision_recall(real, fake, k=3)
    # Fresh samples of the same modes fall inside the union of k-NN balls ~97% of the time in 2-D (over 30
    # seeds: precision 0.950-0.988, mean 0.972; recall 0.476-0.496, mean 0.488 = 0.5 * 0.97).
    assert precision > 0.9
    assert recall == pytest.approx(0.5, abs=0.05)
    # And the fully covering generator recovers recall.
    assert precision_recall(real, _modes(rng, centres, 800))[1] > 0.95


def test_batch_size_and_input_type_do_not_change_the_result():
    rng = np.random.default_rng(4)
    real, fake = rng.standard_normal((60, 4)), rng.standard_normal((50, 4)) + 0.7
    expected = precision_recall(real, fake, k=2)
    assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0
    assert precision_recall(real, fake, k=2, batch_size=7) == expected
    assert precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=2) == expected


def test_bad_inputs_raise():
    x = np.zeros((5, 3))
    with pytest.raises(VcdmError, match="same feature dimension"):
        precision_recall(x, np.zeros((5, 4)))
    with pytest.raises(VcdmError, match="more than k=3"):
        precision_recall(x, np.zeros((3, 3)))
    with pytest.raises(VcdmError, match="k:"):
        precision_recall(x, x, k=0)
    with pytest.raises(VcdmError, match="real_feats"):
        precision_recall(np.zeros(5), x)
    with pytest.raises(VcdmError, match="batch_size"):
        precision_recall(x, x, k=1, batch_size=0)
