import numpy as np
import pytest
import torch

from vcdm.errors import VcdmError
from vcdm.eval.classes import class_histogram, histogram_distance_from_uniform


def test_class_histogram_counts_and_normalises():
    hist = class_histogram(np.array([0, 2, 2, 3, 2, 0]), 5)
    np.testing.assert_allclose(hist, [2 / 6, 0.0, 3 / 6, 1 / 6, 0.0])
    assert hist.shape == (5,) and hist.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(class_histogram(torch.tensor([0, 2, 2, 3, 2, 0]), 5), hist)


def test_uniform_predictions_are_at_distance_zero():
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 7))
    assert histogram_distance_from_uniform(labels, 10) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("num_classes", [1, 2, 10])
def test_single_class_predictions_are_at_maximum_distance(num_classes):
    labels = np.full(50, num_classes - 1)
    assert histogram_distance_from_uniform(labels, num_classes) == pytest.approx(1.0 - 1.0 / num_classes)


def test_half_the_classes_is_at_distance_one_half():
    # Classes 0..4 of 10 each get 1/5: TV = 0.5 * (5 * (1/5 - 1/10) + 5 * 1/10) = 0.5.
    assert histogram_distance_from_uniform(np.arange(5).repeat(3), 10) == pytest.approx(0.5)


def test_bad_labels_raise():
    with pytest.raises(VcdmError, match=r"\[0, 3\)"):
        class_histogram(np.array([0, 3]), 3)
    with pytest.raises(VcdmError, match=r"\[0, 3\)"):
        class_histogram(np.array([-1, 0]), 3)
    with pytest.raises(VcdmError, match="integer"):
        class_histogram(np.array([0.0, 1.0]), 3)
    with pytest.raises(VcdmError, match="1-D"):
        class_histogram(np.array([], dtype=np.int64), 3)
    with pytest.raises(VcdmError, match="num_classes"):
        class_histogram(np.array([0]), 0)
