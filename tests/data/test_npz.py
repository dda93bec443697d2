""".npz datasets: round trips in each layout, and each malformed archive named in its error."""

import re

import numpy as np
import pytest
import torch

from vcdm.data import load_npz
from vcdm.errors import VcdmError


def _images(*shape):
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def test_gray_round_trip_with_labels(tmp_path):
    images, labels = _images(5, 6, 7), np.array([2, 0, 1, 2, 0], dtype=np.int32)
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    data = load_npz(tmp_path / "d.npz")
    assert data.images.shape == (5, 1, 6, 7) and data.images.dtype == torch.uint8
    assert np.array_equal(data.images[:, 0].numpy(), images)
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == [2, 0, 1, 2, 0]
    assert data.class_names == ("0", "1", "2") and data.source == str(tmp_path / "d.npz")
    limited = load_npz(tmp_path / "d.npz", limit=2)
    assert len(limited) == 2 and limited.labels.tolist() == [2, 0] and limited.num_classes == 3


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_round_trip_without_labels(tmp_path, channels):
    images = _images(3, 4, 5, channels)
    np.savez_compressed(tmp_path / "d.npz", images=images)
    data = load_npz(tmp_path / "d.npz")
    assert data.labels is None and data.class_names == ()
    assert np.array_equal(data.images.numpy(), images.transpose(0, 3, 1, 2))
    data.images += 1  # writable, owns its memory


def test_resize_and_channels(tmp_path):
    np.savez(tmp_path / "d.npz", images=_images(2, 12, 16, 3))
    assert load_npz(tmp_path / "d.npz", image_size=8, channels=1).images.shape == (2, 1, 8, 8)
    assert load_npz(tmp_path / "d.npz", channels=3).images.shape == (2, 3, 12, 16)


def _error(path) -> str:
    with pytest.raises(VcdmError) as info:
        load_npz(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    return message


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"pixels": _images(2, 4, 4), "y": np.zeros(2)}, "found keys: pixels, y"),
        ({"images": _images(2, 4, 4).astype(np.float32)}, "dtype float32, expected uint8"),
        ({"images": _images(2, 4)}, r"shape \(2, 4\)"),
        ({"images": _images(2, 4, 4, 2)}, "C 1 or 3"),
        ({"images": _images(0, 4, 4)}, r"shape \(0, 4, 4\)"),
        ({"images": _images(2, 4, 4), "labels": np.array([0, 1, 2])}, r"shape \(3,\), expected \(2,\) like"),
        ({"images": _images(2, 4, 4), "labels": np.array([0, -1])}, "from -1"),
        ({"images": _images(2, 4, 4), "labels": np.array([0.0, 1.0])}, "expected integer"),
    ],
)
def test_malformed_arrays(tmp_path, arrays, expected):
    np.savez(tmp_path / "bad.npz", **arrays)
    assert re.search(expected, _error(tmp_path / "bad.npz"))


def test_not_an_archive(tmp_path):
    assert "No such file" in _error(tmp_path / "missing.npz")
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    assert "not a valid .npz" in _error(tmp_path / "garbage.npz")
    np.save(tmp_path / "single.npy", _images(2, 4, 4))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    assert ".npy" in _error(tmp_path / "single.npz")
    np.savez(tmp_path / "objects.npz", images=np.array([object(), object()], dtype=object))
    assert "cannot read" in _error(tmp_path / "objects.npz")


def test_captions_load_and_are_checked(tmp_path):
    import numpy as np

    from vcdm.data import load_npz
    from vcdm.errors import VcdmError

    images = np.zeros((3, 8, 8, 3), np.uint8)
    np.savez(tmp_path / "c.npz", images=images, captions=np.array(["red heart", " dog face ", "cat"]))
    data = load_npz(tmp_path / "c.npz", limit=2)
    assert data.captions == ["red heart", "dog face"] and data.subset(slice(1, 2)).captions == ["dog face"]
    np.savez(tmp_path / "e.npz", images=images, captions=np.array(["a", "  ", "b"]))
    with pytest.raises(VcdmError, match=r"e\.npz: caption 1 is empty"):
        load_npz(tmp_path / "e.npz")
    np.savez(tmp_path / "n.npz", images=images, captions=np.arange(3))
    with pytest.raises(VcdmError, match="'captions' has dtype int64"):
        load_npz(tmp_path / "n.npz")
    assert load_npz(tmp_path / "c.npz").labels is None
