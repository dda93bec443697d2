import json
import os
import shutil
import socket
import sys

import pytest
import torch

from vcdm.embedders.base import Embedder
from vcdm.embedders.clip import OPENAI_CLIP_MEAN, ClipEmbedder
from vcdm.errors import VcdmError

transformers = pytest.importorskip("transformers")

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _write_tokenizer(path):
    # A tiny CLIP BPE vocabulary: special tokens, single letters, letters ending a word, and one merge.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab |= {c: i + 2 for i, c in enumerate(LETTERS)}
    vocab |= {c + "</w>": i + 28 for i, c in enumerate(LETTERS)}
    vocab |= {"ca": 54, "cat</w>": 55}
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\n")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny randomly initialised CLIP (with tokenizer) saved like a real one."""
    path = tmp_path_factory.mktemp("tiny_clip")
    common = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2)
    config = transformers.CLIPConfig(
        text_config=dict(
            common, vocab_size=64, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1
        ),
        vision_config=dict(common, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(path)
    _write_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def embedder(clip_dir):
    return ClipEmbedder.from_pretrained(clip_dir)


def _images(b, c=3, h=32, w=32, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_image_features_are_unit_vectors_and_deterministic(embedder):
    assert isinstance(embedder, Embedder) and embedder.dim == 16
    x = _images(3)
    y = embedder.encode_images(x)
    assert y.shape == (3, 16) and y.dtype == torch.float32
    assert torch.allclose(y.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.equal(y, embedder.encode_images(x))
    assert not torch.allclose(y[0], y[1])


def test_gray_images_are_repeated_to_rgb_and_resized(embedder):
    gray = _images(2, c=1, h=28, w=28)
    y = embedder.encode_images(gray)
    assert torch.allclose(y, embedder.encode_images(gray.repeat(1, 3, 1, 1)), atol=1e-6)
    assert embedder.encode_images(_images(2, h=20, w=48)).shape == (2, 16)


def test_text_features_are_unit_vectors(embedder):
    y = embedder.encode_text(["a cat", "a dog", "a cat"])
    assert y.shape == (3, 16) and y.dtype == torch.float32
    assert torch.allclose(y.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(y[0], y[2]) and not torch.allclose(y[0], y[1])
    # Longer than the context length (16 tokens): truncated, not an error.
    assert embedder.encode_text(["cat " * 40]).shape == (1, 16)


def test_loading_never_touches_the_network(clip_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access during CLIP loading")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    embedder = ClipEmbedder.from_pretrained(clip_dir)
    assert embedder.encode_text(["a cat"]).shape == (1, 16)
    # The offline switches were only set for the duration of the load.
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["TRANSFORMERS_OFFLINE"] == "0"


def test_saved_normalisation_is_used(clip_dir, tmp_path):
    path = tmp_path / "clip"
    shutil.copytree(clip_dir, path)
    assert torch.allclose(ClipEmbedder.from_pretrained(path).mean.flatten(), torch.tensor(OPENAI_CLIP_MEAN))
    (path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3})
    )
    custom = ClipEmbedder.from_pretrained(path)
    assert torch.equal(custom.mean.flatten(), torch.full((3,), 0.5))
    assert torch.equal(custom.std.flatten(), torch.full((3,), 0.25))


def test_without_tokenizer_text_raises(clip_dir, tmp_path):
    path = tmp_path / "vision_only"
    shutil.copytree(clip_dir, path, ignore=shutil.ignore_patterns("vocab.json", "merges.txt"))
    embedder = ClipEmbedder.from_pretrained(path)
    assert embedder.encode_images(_images(1)).shape == (1, 16)
    with pytest.raises(VcdmError, match="no text encoder"):
        embedder.encode_text(["a cat"])


def test_missing_or_broken_directory_raises(clip_dir, tmp_path):
    with pytest.raises(VcdmError, match="save_pretrained") as info:
        ClipEmbedder.from_pretrained(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(clip_dir / "config.json", broken / "config.json")
    with pytest.raises(VcdmError, match="broken.*save_pretrained"):
        ClipEmbedder.from_pretrained(broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(VcdmError, match="broken.*cannot load"):
        ClipEmbedder.from_pretrained(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(VcdmError, match="config.json: not a valid JSON"):
        ClipEmbedder.from_pretrained(broken)
    (broken / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(VcdmError, match="'bert', not 'clip'"):
        ClipEmbedder.from_pretrained(broken)


def test_missing_transformers_names_the_extra(clip_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(VcdmError, match=r"vcdm\[clip\]"):
        ClipEmbedder.from_pretrained(clip_dir)
