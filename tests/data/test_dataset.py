"""DataConfig validation and load_dataset's dispatch; the same conforming for every source."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vcdm.data import DataConfig, load_dataset
from vcdm.errors import VcdmError


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"source": ""}, "data.source"),
        ({"split": "training"}, "data.split"),
        ({"source": "x.npz", "split": "test"}, "data.split"),
        ({"image_size": 4}, "data.image_size"),
        ({"image_size": 32.0}, "data.image_size"),
        ({"channels": 2}, "data.channels"),
        ({"channels": True}, "data.channels"),
        ({"limit": 0}, "data.limit"),
    ],
)
def test_config_validation_names_the_field(fields, field):
    with pytest.raises(VcdmError, match=field):
        DataConfig(**fields)


def test_config_is_json_serialisable():
    cfg = DataConfig(source="imgs", image_size=32, channels=3, limit=10)
    assert DataConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg


def test_mnist_source_with_options():
    data = load_dataset(DataConfig(split="test", limit=3, channels=3, image_size=16))
    assert data.images.shape == (3, 3, 16, 16) and data.labels.tolist() == [7, 2, 1]
    assert data.source == "mnist:test"


def test_every_source_conforms_the_same_way(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 12, 20, 3), dtype=np.uint8)  # (N, H, W, C)
    np.savez(tmp_path / "d.npz", images=pixels, labels=np.array([1, 0, 1]))
    (tmp_path / "folder").mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / "folder" / f"{i}.png")
    options = {"image_size": 8, "channels": 1, "limit": 2}
    from_npz = load_dataset(DataConfig(source=str(tmp_path / "d.npz"), **options))
    from_folder = load_dataset(DataConfig(source=str(tmp_path / "folder"), **options))
    assert from_npz.images.shape == (2, 1, 8, 8) and torch.equal(from_npz.images, from_folder.images)
    assert from_npz.labels.tolist() == [1, 0] and from_folder.labels is None


def test_bad_sources(tmp_path):
    with pytest.raises(VcdmError, match="nowhere.*does not exist"):
        load_dataset(DataConfig(source=str(tmp_path / "nowhere")))
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(VcdmError, match="data.csv.*not an .npz"):
        load_dataset(DataConfig(source=str(tmp_path / "data.csv")))
    with pytest.raises(VcdmError, match="missing.npz"):
        load_dataset(DataConfig(source=str(tmp_path / "missing.npz")))
