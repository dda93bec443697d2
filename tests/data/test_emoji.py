"""The emoji dataset on a small fake npm tarball: fetching (checksum, what is unpacked), labels, captions,
alpha on white, resizing, the held-out split, the decoded cache and the errors. npm is never run."""

import hashlib
import io
import json
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from vcdm.data import DataConfig, ImageData, emoji, fetch_emoji, load_dataset, load_emoji
from vcdm.errors import VcdmError

COLOURS = {"google": (255, 0, 0), "twitter": (0, 0, 255)}
ENTRIES = [
    {"name": "GRINNING FACE", "category": "Smileys & Emotion", "image": "1f600.png"},
    {
        "name": "WAVING HAND SIGN",
        "category": "People & Body",
        "image": "1f44b.png",
        "skin_variations": {"1F3FD": {"image": "1f44b-1f3fd.png"}, "1F3FB-1F3FF": {"image": "1f44b-x.png"}},
    },
    {
        "name": "WOMAN SINGER",  # held out, with its variant
        "category": "People & Body",
        "image": "1f469-200d-1f3a4.png",
        "skin_variations": {"1F3FE": {"image": "1f469-1f3fe-200d-1f3a4.png"}},
    },
    {"name": "RED APPLE", "category": "Food & Drink", "image": "1f34e.png", "has_img_twitter": False},
    *({"name": f"TEST EMOJI {i}", "category": "Objects", "image": f"t{i}.png"} for i in range(8)),
]
# (caption, category) of every google image, in emoji.json order; twitter lacks the red apple.
EXPECTED = [
    ("grinning face", "Smileys & Emotion"),
    ("waving hand sign", "People & Body"),
    ("waving hand sign, medium skin tone", "People & Body"),
    ("waving hand sign, light skin tone, dark skin tone", "People & Body"),
    ("woman singer", "People & Body"),
    ("woman singer, medium-dark skin tone", "People & Body"),
    ("red apple", "Food & Drink"),
    *((f"test emoji {i}", "Objects") for i in range(8)),
]
# Golden: the names whose SHA-256 falls in the first 10% (a variant goes where its base emoji goes).
HELDOUT = {"woman singer", "woman singer, medium-dark skin tone", "test emoji 3", "test emoji 6"}


def _png(vendor: str, file: str) -> bytes:
    """64x64: top left transparent, top right opaque colour, bottom left a 1px black/white checkerboard,
    bottom right the colour at alpha 128. t0.png of google is gray+alpha (LA) with gray 0 (black)."""
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[:32, :32] = (10, 20, 30, 0)  # transparent, with a colour that must not show
    rgba[:32, 32:] = (*COLOURS[vendor], 255)
    checker = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)
    rgba[32:, :32, :3], rgba[32:, :32, 3] = checker[..., None], 255
    rgba[32:, 32:] = (*COLOURS[vendor], 128)
    img = Image.fromarray(rgba, "RGBA")
    if vendor == "google" and file == "t0.png":
        img = Image.merge("LA", (Image.new("L", (64, 64), 0), img.getchannel("A")))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _tarball(path, vendor: str) -> None:
    entries = [
        {
            **e,
            "has_img_google": True,
            "has_img_twitter": e.get("has_img_twitter", True),
            "skin_variations": {
                k: {**v, "has_img_google": True, "has_img_twitter": True}
                for k, v in e.get("skin_variations", {}).items()
            },
        }
        for e in ENTRIES
    ]
    files = {"package/emoji.json": json.dumps(entries).encode(), "package/README.md": b"readme"}
    for e in entries:
        for image, has in [(e["image"], e[f"has_img_{vendor}"])] + [
            (v["image"], True) for v in e["skin_variations"].values()
        ]:
            if has:
                files[f"package/img/{vendor}/64/{image}"] = _png(vendor, image)
    files[f"package/img/{vendor}/32/1f600.png"] = b"not wanted"
    files[f"package/img/{vendor}/sheets/64.png"] = b"not wanted"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("npm")
    out = {}
    for vendor in emoji.VENDORS:
        path = folder / f"emoji-datasource-{vendor}-{emoji.VERSION}.tgz"
        _tarball(path, vendor)
        out[f"{emoji.PACKAGES[vendor]}@{emoji.VERSION}"] = path
    return out


@pytest.fixture
def fake_pack(tarballs):
    calls = []

    def pack(spec, dest):
        calls.append(spec)
        return shutil.copy(tarballs[spec], dest)

    pack.calls = calls
    return pack


def _checksums(tarballs):
    return {
        v: hashlib.sha256(tarballs[f"{emoji.PACKAGES[v]}@{emoji.VERSION}"].read_bytes()).hexdigest()
        for v in emoji.VENDORS
    }


@pytest.fixture
def cache(tmp_path, monkeypatch, tarballs, fake_pack):
    """The fake images fetched into a fresh data cache ($VCDM_CACHE_DIR)."""
    monkeypatch.setenv("VCDM_CACHE_DIR", str(tmp_path / "cache"))
    fetch_emoji(pack=fake_pack, checksums=_checksums(tarballs))
    return tmp_path / "cache"


def test_fetch_checks_the_checksum_and_unpacks_only_what_is_needed(tmp_path, tarballs, fake_pack):
    with pytest.raises(VcdmError, match=r"emoji-datasource-google@16\.0\.0: tarball SHA-256 is") as e:
        fetch_emoji("google", tmp_path, pack=fake_pack)  # the recorded (real) checksum
    assert "\n" not in str(e.value)
    assert not (tmp_path / "emoji" / "google-16.0.0").exists()
    assert [p.name for p in (tmp_path / "emoji").iterdir()] == []  # no staging folder left behind

    paths = fetch_emoji(["google", "twitter"], tmp_path, pack=fake_pack, checksums=_checksums(tarballs))
    root = paths["google"]
    assert root == tmp_path / "emoji" / "google-16.0.0" == emoji.dataset_dir("google", tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["SOURCE.txt", "emoji.json", "img"]
    assert len(list((root / "img").iterdir())) == len(EXPECTED)
    assert len(list((paths["twitter"] / "img").iterdir())) == len(EXPECTED) - 1
    assert "Apache License 2.0" in (root / "SOURCE.txt").read_text()
    assert sorted(p.name for p in (tmp_path / "emoji").iterdir()) == ["google-16.0.0", "twitter-16.0.0"]

    fake_pack.calls.clear()
    assert fetch_emoji("google", tmp_path, pack=fake_pack) == {"google": root}  # already there: no pack
    assert fake_pack.calls == []
    fetch_emoji("google", tmp_path, pack=fake_pack, checksums=_checksums(tarballs), force=True)
    assert fake_pack.calls == ["emoji-datasource-google@16.0.0"]
    assert sorted(p.name for p in (tmp_path / "emoji").iterdir()) == ["google-16.0.0", "twitter-16.0.0"]
    assert len(list((root / "img").iterdir())) == len(EXPECTED)


def test_fetch_without_npm(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(VcdmError, match="npm not found") as e:
        fetch_emoji("twitter", tmp_path)
    assert "\n" not in str(e.value)
    monkeypatch.setenv("VCDM_CACHE_DIR", str(tmp_path))
    assert emoji.main(["google"]) == 2


def test_missing_dataset_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("VCDM_CACHE_DIR", str(tmp_path))
    for load in (lambda: load_emoji("twitter"), lambda: load_dataset(DataConfig(source="emoji"))):
        with pytest.raises(VcdmError, match=r"make emoji-data.*python -m vcdm\.data\.emoji") as e:
            load()
        assert "\n" not in str(e.value)


def test_labels_captions_and_both_vendors(cache):
    google = [load_emoji("google", s) for s in ("train", "test")]
    rows = sorted(
        (c, d.class_names[k]) for d in google for c, k in zip(d.captions, d.labels.tolist(), strict=True)
    )
    assert rows == sorted(EXPECTED)
    assert google[0].class_names == emoji.CATEGORIES and len(emoji.CATEGORIES) == 10
    assert list(emoji.CATEGORIES) == sorted(emoji.CATEGORIES)
    assert google[0].source == "emoji:google:train"

    both = load_dataset(DataConfig(source="emoji"))
    twitter = load_emoji("twitter")
    assert both.source == "emoji:train" and len(both) == len(google[0]) + len(twitter)
    assert both.captions == google[0].captions + twitter.captions
    assert torch.equal(both.images, torch.cat([google[0].images, twitter.images]))
    assert "red apple" not in twitter.captions  # has_img_twitter false


def test_alpha_composited_on_white(cache):
    data = load_emoji(("google", "twitter"))
    for vendor, offset in (("google", 0), ("twitter", len(load_emoji("google")))):
        image = data.images[offset + data.captions[offset:].index("grinning face")]
        assert image.shape == (3, 64, 64)
        assert image[:, :32, :32].eq(255).all()  # transparent -> white
        assert image[:, 5, 40].tolist() == list(COLOURS[vendor])  # opaque
        half = image[:, 50, 50].tolist()  # alpha 128 over white: colour channels 255, the others ~127
        assert all(v == 255 if c == 255 else abs(v - 127) <= 1 for v, c in zip(half, COLOURS[vendor]))
    gray = data.images[data.captions.index("test emoji 0")]  # google's LA image: black, transparent left
    assert gray[:, :32, :32].eq(255).all() and gray[:, 5, 40].tolist() == [0, 0, 0]


def test_resize_is_antialiased_and_channels_convert(cache):
    data = load_emoji("google", image_size=32)
    assert data.images.shape == (len(data), 3, 32, 32)
    image = data.images[data.captions.index("grinning face")]
    assert image[:, :12, :12].eq(255).all() and image[:, 4, 24].tolist() == [255, 0, 0]
    checker = image[:, 20:30, 2:12].float()  # a 1px checkerboard averages to gray, not black/white
    assert 100 < checker.mean() < 155 and checker.std() < 20

    gray = load_dataset(DataConfig(source="emoji:google", image_size=16, channels=1, limit=3))
    assert gray.images.shape == (3, 1, 16, 16) and len(gray.captions) == 3 and len(gray.labels) == 3


def test_heldout_split_is_stable_disjoint_and_the_same_for_both_vendors(cache):
    assert {c for c, _ in EXPECTED if emoji.is_heldout(c.split(",")[0])} == HELDOUT
    assert emoji.is_heldout("WOMAN SINGER") and emoji.emoji_split("Woman Singer") == "test"
    tests = {v: load_emoji(v, "test") for v in emoji.VENDORS}
    assert tests["google"].captions == tests["twitter"].captions  # same emoji held out for both
    assert set(tests["google"].captions) == HELDOUT
    assert tests["google"].source == "emoji:google:test"
    train = load_emoji("google", "train")
    assert not set(train.captions) & set(tests["google"].captions)
    assert len(train) + len(tests["google"]) == len(EXPECTED)
    frozen = DataConfig(source="emoji:twitter", split="test")
    assert load_dataset(frozen).captions == tests["twitter"].captions


def test_captions_stay_aligned_through_limit_and_subset(cache):
    data = load_dataset(DataConfig(source="emoji:google", limit=4))
    assert data.captions == [c for c, _ in EXPECTED if c not in HELDOUT][:4]
    full = load_emoji("google")
    picked = full.subset(torch.tensor([3, 0]))
    assert picked.captions == [full.captions[3], full.captions[0]]
    assert torch.equal(picked.images[1], full.images[0])
    masked = full.subset(full.labels == emoji.CATEGORIES.index("Objects"))
    assert masked.captions == [f"test emoji {i}" for i in range(8) if f"test emoji {i}" not in HELDOUT]
    assert full.subset(slice(1, 3)).captions == full.captions[1:3]
    plain = ImageData(full.images[:2], None, (), "x")
    assert plain.captions is None and plain.subset(slice(0, 1)).captions is None
    with pytest.raises(ValueError, match="captions"):
        ImageData(full.images[:2], None, (), "x", captions=["one"])


def test_decoded_images_are_cached_per_vendor_and_size(cache, monkeypatch):
    first = load_emoji("google")
    cache_file = cache / "emoji" / f"google-{emoji.VERSION}-64px-v{emoji._CACHE_VERSION}.npz"
    assert cache_file.is_file()

    def no_decode(*args):
        raise AssertionError("decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(emoji, "_decode", no_decode)
        assert torch.equal(load_emoji("google").images, first.images)
        with pytest.raises(AssertionError, match="decoded again"):
            load_emoji("google", image_size=32)  # another size: its own cache
    cache_file.write_bytes(b"corrupt")
    assert torch.equal(load_emoji("google").images, first.images)  # decoded again and rewritten
    assert cache_file.stat().st_size > 1000


def test_source_and_vendor_validation():
    assert emoji.emoji_vendors("emoji") == ("google", "twitter")
    assert emoji.emoji_vendors("emoji:twitter") == ("twitter",)
    assert emoji.emoji_vendors("mnist") is None and emoji.emoji_vendors("./emoji") is None
    for source in ("emoji", "emoji:google", "emoji:twitter"):
        assert DataConfig(source=source, split="test").split == "test"
    with pytest.raises(
        VcdmError, match="data.source: unknown emoji vendor 'apple'.*emoji:google, emoji:twitter"
    ):
        DataConfig(source="emoji:apple")
    with pytest.raises(VcdmError, match="data.split: got 'valid', expected one of train, test"):
        DataConfig(source="emoji", split="valid")
    with pytest.raises(VcdmError, match="data.split"):
        DataConfig(source="x.npz", split="test")
    with pytest.raises(VcdmError, match="emoji vendor: got 'apple', expected one of google, twitter"):
        load_emoji("apple")
    with pytest.raises(VcdmError, match="emoji vendor"):
        fetch_emoji(["google", "facebook"])
    with pytest.raises(VcdmError, match="data.split"):
        load_emoji("google", "valid")
