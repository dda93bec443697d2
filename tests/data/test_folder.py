"""Image-folder loading: layouts, labels, order, resizing, channels, and each error case."""

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vcdm.data import load_image_folder
from vcdm.errors import VcdmError


def _save(path: Path, value: int = 0, size=(8, 8), mode: str = "RGB") -> Path:
    """Write a uniform image whose pixels all equal `value` (each channel), so the order can be checked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value,) * len(mode)
    Image.new(mode, size, color).save(path)
    return path


def _png_bytes(size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(size[0] * size[1] * 3, dtype=np.uint8).reshape(size[1], size[0], 3)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


def test_class_folders_give_sorted_labels_and_recursive_files(tmp_path):
    _save(tmp_path / "dog" / "2.png", 40)
    _save(tmp_path / "dog" / "1.PNG", 30)
    _save(tmp_path / "cat" / "z.jpeg", 20)  # JPEG of a uniform image decodes exactly
    _save(tmp_path / "cat" / "sub" / "b.png", 11)
    _save(tmp_path / "cat" / "sub" / "a.JPG", 10)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    _save(tmp_path / "cat" / ".hidden.png", 99)
    _save(tmp_path / ".cache" / "x.png", 99)
    data = load_image_folder(tmp_path)
    assert data.class_names == ("cat", "dog") and data.num_classes == 2
    assert data.labels.tolist() == [0, 0, 0, 1, 1] and data.labels.dtype == torch.int64
    assert data.images[:, 0, 0, 0].tolist() == [10, 11, 20, 30, 40]
    assert data.images.shape == (5, 3, 8, 8) and data.images.dtype == torch.uint8
    assert data.source == str(tmp_path)


def test_images_at_the_top_are_unlabelled(tmp_path):
    for i, name in enumerate(["c.png", "a.png", "b.jpg"]):
        _save(tmp_path / name, 10 * i, mode="L")
    (tmp_path / "empty_subfolder").mkdir()
    data = load_image_folder(tmp_path)
    assert data.labels is None and data.class_names == () and data.num_classes == 0
    assert data.images.shape == (3, 1, 8, 8)
    assert data.images[:, 0, 0, 0].tolist() == [10, 20, 0]  # a, b, c
    assert len(load_image_folder(tmp_path, limit=2)) == 2


def test_resize_and_centre_crop(tmp_path):
    pixels = np.zeros((8, 16), np.uint8)
    pixels[:] = np.arange(16) * 10  # column x has value 10 x
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    Image.fromarray(np.ascontiguousarray(pixels.T)).save(tmp_path / "tall.png")
    data = load_image_folder(tmp_path, image_size=8)
    assert data.images.shape == (2, 1, 8, 8)
    # Shorter side already 8: no resampling, just the central 8 columns (4..11) or rows.
    assert data.images[1, 0, 0].tolist() == [40, 50, 60, 70, 80, 90, 100, 110]
    assert data.images[0, 0, :, 0].tolist() == [40, 50, 60, 70, 80, 90, 100, 110]
    _save(tmp_path / "small.png", 200, size=(4, 4), mode="L")
    up = load_image_folder(tmp_path, image_size=12)
    assert up.images.shape == (3, 1, 12, 12) and (up.images[0] == 200).all()  # small < tall < wide


def test_gray_rgb_conversion(tmp_path):
    _save(tmp_path / "gray" / "a.png", 7, mode="L")
    _save(tmp_path / "gray" / "b.png", 9, mode="L")
    rgb = load_image_folder(tmp_path / "gray", channels=3)
    assert rgb.images.shape == (2, 3, 8, 8) and rgb.images[:, :, 0, 0].tolist() == [[7, 7, 7], [9, 9, 9]]
    for name in ("a.png", "b.png"):
        (tmp_path / "red").mkdir(exist_ok=True)
        Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(tmp_path / "red" / name)
    red = load_image_folder(tmp_path / "red")
    assert red.images.shape == (2, 3, 8, 8) and red.images[0, :, 0, 0].tolist() == [255, 0, 0]
    gray = load_image_folder(tmp_path / "red", channels=1)
    assert gray.images.shape == (2, 1, 8, 8) and (gray.images == 76).all()  # ITU-R 601 luma of red


def _error(path, **kwargs) -> str:
    with pytest.raises(VcdmError) as info:
        load_image_folder(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_and_empty_folders(tmp_path):
    assert "nowhere" in _error(tmp_path / "nowhere")
    (tmp_path / "readme.txt").write_text("x")
    assert str(tmp_path) in _error(tmp_path) and "no images" in _error(tmp_path)


def test_corrupt_and_truncated_files_are_named(tmp_path):
    _save(tmp_path / "good.png")
    (tmp_path / "junk.png").write_bytes(b"definitely not a png")
    assert "junk.png" in _error(tmp_path)
    (tmp_path / "junk.png").unlink()
    (tmp_path / "cut.png").write_bytes(_png_bytes((32, 32))[:200])
    assert "cut.png" in _error(tmp_path)
    (tmp_path / "cut.png").unlink()
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        buffer, "JPEG"
    )
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[:-300])
    assert "cut.jpg" in _error(tmp_path)


def test_mixed_sizes_and_modes(tmp_path):
    _save(tmp_path / "a.png", size=(8, 8))
    _save(tmp_path / "b.png", size=(16, 12))
    message = _error(tmp_path)
    assert "b.png" in message and "16x12" in message and "8x8" in message and "--data.image_size" in message
    assert load_image_folder(tmp_path, image_size=8).images.shape == (2, 3, 8, 8)
    _save(tmp_path / "b.png", mode="L")
    message = _error(tmp_path)
    assert "b.png" in message and "grayscale" in message and "data.channels" in message
    assert load_image_folder(tmp_path, channels=1).images.shape == (2, 1, 8, 8)


def test_bad_class_layouts(tmp_path):
    _save(tmp_path / "one" / "a.png")
    _save(tmp_path / "two" / "a.png")
    _save(tmp_path / "two" / "b.png")
    message = _error(tmp_path)
    assert str(tmp_path / "one") in message and "1 image" in message
    _save(tmp_path / "one" / "b.png")
    (tmp_path / "zero").mkdir()
    assert str(tmp_path / "zero") in _error(tmp_path)
    (tmp_path / "zero").rmdir()
    _save(tmp_path / "stray.png")
    message = _error(tmp_path)
    assert "stray.png" in message and "one/" in message


# Things that look like the start of a real image file, so that decoders get past the signature.
_PREFIXES = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    _png_bytes()[:60],
    b"\xff\xd8\xff\xe0",
    b"BM",
    b"GIF89a",
    b"P5\n4 4\n255\n",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(_PREFIXES), body=st.binary(max_size=600))
def test_random_bytes_only_ever_raise_vcdm_error(prefix, body):
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "foo.png").write_bytes(prefix + body)
        try:
            data = load_image_folder(folder)
        except VcdmError as e:
            assert "foo.png" in str(e)
        else:
            assert data.images.dtype == torch.uint8 and len(data) == 1


def test_sidecar_captions(tmp_path):
    from PIL import Image

    from vcdm.data import load_image_folder
    from vcdm.errors import VcdmError

    for name in ("a", "b"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    assert load_image_folder(tmp_path).captions is None  # no sidecars: no captions
    (tmp_path / "a.txt").write_text("red heart\n", encoding="utf-8")
    with pytest.raises(VcdmError, match=r"b\.txt: missing; .* 1 of 2 images have one"):
        load_image_folder(tmp_path)
    (tmp_path / "b.txt").write_text("  dog face ", encoding="utf-8")
    assert load_image_folder(tmp_path).captions == ["red heart", "dog face"]
    (tmp_path / "b.txt").write_text("   ", encoding="utf-8")
    with pytest.raises(VcdmError, match=r"b\.txt: the caption is empty"):
        load_image_folder(tmp_path)
