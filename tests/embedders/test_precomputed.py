import numpy as np
import pytest
import torch

from vcdm.embedders.base import Embedder
from vcdm.embedders.precomputed import PrecomputedEmbedder
from vcdm.errors import VcdmError


def _save(tmp_path, array, name="emb.npy"):
    path = tmp_path / name
    np.save(path, array)
    return path


def test_loads_float_arrays_as_float32(tmp_path):
    array = np.random.default_rng(0).normal(size=(7, 5))  # float64
    embedder = PrecomputedEmbedder.from_npy(_save(tmp_path, array), num_images=7)
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 5 and embedder.embeddings.shape == (7, 5)
    assert embedder.embeddings.dtype == torch.float32
    assert torch.allclose(embedder.embeddings, torch.from_numpy(array).float())
    # num_images=None skips the row check; float16 is accepted too.
    assert PrecomputedEmbedder.from_npy(_save(tmp_path, array.astype(np.float16))).dim == 5


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros(5, np.float32), "2-D"),
        (np.zeros((2, 3, 4), np.float32), "2-D"),
        (np.zeros((4, 3), np.int64), "floating-point"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN or infinite"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), "NaN or infinite"),
        (np.zeros((3, 2), np.float32), "4 rows"),
    ],
)
def test_invalid_arrays_name_the_file(tmp_path, array, message):
    path = _save(tmp_path, array, "bad.npy")
    with pytest.raises(VcdmError, match=message) as info:
        PrecomputedEmbedder.from_npy(path, num_images=4)
    assert "bad.npy" in str(info.value)


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(VcdmError, match="missing.npy"):
        PrecomputedEmbedder.from_npy(tmp_path / "missing.npy")
    text = tmp_path / "text.npy"
    text.write_text("not an array")
    with pytest.raises(VcdmError, match="text.npy"):
        PrecomputedEmbedder.from_npy(text)
    archive = tmp_path / "archive.npz"
    np.savez(archive, emb=np.zeros((2, 2)))
    with pytest.raises(VcdmError, match="archive.npz"):
        PrecomputedEmbedder.from_npy(archive)


def test_cannot_embed_new_images_or_text(tmp_path):
    embedder = PrecomputedEmbedder.from_npy(_save(tmp_path, np.zeros((2, 3), np.float32)))
    with pytest.raises(VcdmError, match="cannot embed new images"):
        embedder.encode_images(torch.zeros(1, 1, 8, 8))
    with pytest.raises(VcdmError, match="no text encoder"):
        embedder.encode_text(["a digit"])
