"""ImageData, conforming, uint8 conversion, grids and atomic PNG writing."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from vcdm.data import ImageData, make_grid, save_grid, save_images, save_png, to_uint8
from vcdm.data.images import conform_array, conform_image, resize_center_crop, to_l_or_rgb
from vcdm.errors import VcdmError


def _data(n=6):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    return ImageData(images, torch.arange(n) % 3, ("a", "b", "c"), "test")


def test_image_data_len_subset_and_float():
    data = _data()
    assert len(data) == 6 and data.num_classes == 3
    sub = data.subset(slice(2, 4))
    assert sub.images[:, 0, 0, 0].tolist() == [2, 3] and sub.labels.tolist() == [2, 0]
    assert sub.class_names == data.class_names and sub.source == "test"
    picked = data.subset(torch.tensor([5, 0]))
    assert picked.images[:, 0, 0, 0].tolist() == [5, 0] and picked.labels.tolist() == [2, 0]
    masked = data.subset(data.labels == 1)
    assert masked.images[:, 0, 0, 0].tolist() == [1, 4]
    unlabelled = ImageData(data.images, None, (), "u").subset(slice(0, 2))
    assert unlabelled.labels is None and unlabelled.num_classes == 0
    full = ImageData(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1), None, (), "x")
    x = full.as_float()
    assert x.dtype == torch.float32 and x.flatten().tolist() == [-1.0, 1.0]
    assert data.as_float(slice(1, 2)).shape == (1, 1, 2, 2)


def test_image_data_rejects_inconsistent_fields():
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError):
        ImageData(images.float(), None, (), "x")
    with pytest.raises(ValueError):
        ImageData(torch.zeros(2, 2, 4, 4, dtype=torch.uint8), None, (), "x")
    with pytest.raises(ValueError):
        ImageData(images, torch.tensor([0]), ("a",), "x")
    with pytest.raises(ValueError):
        ImageData(images, torch.tensor([0, 2]), ("a", "b"), "x")


def test_to_uint8_values_and_round_trip():
    x = torch.tensor([-1.0, -2.0, 0.0, 1.0, 3.0, float("nan"), -1 + 1 / 127.5])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255, 0, 1]
    every = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    data = ImageData(every, None, (), "x")
    assert torch.equal(to_uint8(data.as_float()), every)
    assert to_uint8(every) is every


def test_make_grid_layout():
    images = torch.stack([torch.full((3, 4, 5), i + 1, dtype=torch.uint8) for i in range(5)])
    grid = make_grid(images)  # 3 per row, 2 rows
    assert grid.shape == (3, 2 * (4 + 2) + 2, 3 * (5 + 2) + 2) and grid.dtype == torch.uint8
    for i in range(5):
        top, left = 2 + (i // 3) * 6, 2 + (i % 3) * 7
        assert (grid[:, top : top + 4, left : left + 5] == i + 1).all()
    assert (grid[:, :2] == 0).all() and (grid[:, :, :2] == 0).all()
    assert (grid[:, 8:12, 16:21] == 0).all()  # the empty sixth slot stays black
    assert make_grid(images, nrow=5, padding=0).shape == (3, 4, 25)
    assert make_grid(images, nrow=9, padding=1).shape == (3, 6, 5 * 6 + 1)
    floats = make_grid(torch.ones(2, 1, 3, 3), nrow=1)
    assert floats.shape == (1, 2 * 5 + 2, 7) and floats.max() == 255
    with pytest.raises(ValueError):
        make_grid(torch.zeros(0, 1, 2, 2))


def test_conform_resizes_crops_and_converts():
    pixels = np.zeros((20, 40, 3), np.uint8)  # (H, W, C): red | green | blue columns
    pixels[:, :10, 0] = pixels[:, 10:30, 1] = pixels[:, 30:, 2] = 255
    img = Image.fromarray(pixels)
    out = conform_image(img, 10, 3)  # 40x20 -> 20x10 -> centre 10x10 = original columns 10..29
    assert out.shape == (3, 10, 10) and out.dtype == np.uint8
    # Bicubic resampling blurs the colour borders by a pixel; the interior is pure green.
    assert (out[1, :, 1:-1] == 255).all() and (out[1] >= 200).all()
    assert (out[0, :, 1:-1] == 0).all() and (out[2, :, 1:-1] == 0).all()
    assert conform_image(img, None, 3).shape == (3, 20, 40)
    gray = conform_image(Image.fromarray(np.full((4, 4, 3), [255, 0, 0], np.uint8)), None, 1)
    assert gray.shape == (1, 4, 4) and (gray == 76).all()  # ITU-R 601 luma of pure red
    assert resize_center_crop(Image.new("L", (3, 5)), 8).size == (8, 8)


def test_conform_array_is_conform_image_per_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 3, 12, 16), dtype=np.uint8)
    assert conform_array(images, None, None) is images
    assert conform_array(images, None, 3) is images
    out = conform_array(images, 8, 1)
    assert out.shape == (3, 1, 8, 8)
    for img, got in zip(images, out):
        assert np.array_equal(got, conform_image(Image.fromarray(img.transpose(1, 2, 0)), 8, 1))


def test_to_l_or_rgb_modes():
    assert to_l_or_rgb(Image.new("RGBA", (2, 2))).mode == "RGB"
    assert to_l_or_rgb(Image.new("LA", (2, 2))).mode == "L"
    assert to_l_or_rgb(Image.new("P", (2, 2))).mode == "RGB"
    sixteen = Image.fromarray(np.array([[0, 256, 65535]], np.uint16))
    assert sixteen.mode == "I;16"
    assert np.asarray(to_l_or_rgb(sixteen)).tolist() == [[0, 1, 255]]  # high byte, not clipped


@pytest.mark.parametrize("channels", [1, 3])
def test_save_png_round_trip(tmp_path, channels):
    image = torch.randint(
        0, 256, (channels, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    path = tmp_path / "new" / "img.png"
    save_png(image, path)
    assert os.listdir(path.parent) == ["img.png"]
    with Image.open(path) as img:
        read = np.asarray(img)
    assert np.array_equal(read, image[0].numpy() if channels == 1 else image.permute(1, 2, 0).numpy())
    with pytest.raises(ValueError):
        save_png(image.float(), path)


def test_save_png_replaces_only_after_a_complete_write(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    path.write_bytes(b"old")

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)  # the data is written; the failure comes before the rename
    with pytest.raises(VcdmError, match="out.png: cannot write .No space left"):
        save_png(torch.zeros(1, 2, 2, dtype=torch.uint8), path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.png"]

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_png(torch.zeros(1, 2, 2, dtype=torch.uint8), path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.png"]
    monkeypatch.undo()
    save_png(torch.zeros(1, 2, 2, dtype=torch.uint8), path)
    assert path.read_bytes().startswith(b"\x89PNG") and os.listdir(tmp_path) == ["out.png"]


def test_save_grid_and_save_images(tmp_path):
    images = torch.linspace(-1, 1, 4 * 3 * 2 * 2).view(4, 3, 2, 2)
    save_grid(images, tmp_path / "grid.png", nrow=2)
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (2 * 4 + 2, 2 * 4 + 2)
    paths = save_images(images, tmp_path / "each", ["a", "b.png", "c", "d"])
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png", "d.png"]
    for image, path in zip(to_uint8(images), paths):
        with Image.open(path) as read:
            assert np.array_equal(np.asarray(read), image.permute(1, 2, 0).numpy())
    with pytest.raises(ValueError):
        save_images(images, tmp_path, ["a", "b", "c"])
    with pytest.raises(ValueError):
        save_images(images, tmp_path, ["a", "a", "c", "d"])
    with pytest.raises(ValueError):
        save_images(images, tmp_path, ["a", "b", "../c", "d"])
