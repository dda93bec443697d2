import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vcdm.data.augment import AugmentConfig
from vcdm.embedders.base import Embedder
from vcdm.embedders.learned import ContrastiveTask, ConvEncoder, EncoderConfig, LearnedEmbedder
from vcdm.errors import VcdmError

IDENTITY = AugmentConfig(
    max_rotation_deg=0.0, max_translate=0.0, scale_range=(1.0, 1.0), contrast=0.0, brightness=0.0
)
TINY = EncoderConfig(image_size=8, channels=(8, 16), feature_dim=16, dim=8)


def _images(b, c=1, size=8, seed=0):
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(
    "cfg",
    [EncoderConfig(), EncoderConfig(image_size=32, in_channels=3, channels=(8, 16, 16, 16), dim=16), TINY],
)
def test_encoder_outputs_unit_vectors(cfg):
    torch.manual_seed(0)
    model = ConvEncoder(cfg)
    y = model(_images(3, cfg.in_channels, cfg.image_size))
    assert y.shape == (3, cfg.dim) and y.dtype == torch.float32
    assert torch.allclose(y.norm(dim=1), torch.ones(3), atol=1e-5)


def test_config_json_round_trip_rebuilds_the_same_model():
    cfg = dataclasses.replace(TINY, augment=AugmentConfig(max_rotation_deg=5.0, scale_range=(0.9, 1.0)))
    restored = EncoderConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert restored == cfg and isinstance(restored.augment, AugmentConfig)
    model = ConvEncoder(cfg)
    rebuilt = ConvEncoder(restored)
    rebuilt.load_state_dict(model.state_dict())
    x = _images(2)
    assert torch.equal(model(x), rebuilt(x))


@pytest.mark.parametrize(
    "field, value",
    [
        ("dim", 0),
        ("image_size", 2.5),
        ("channels", ()),
        ("channels", (12,)),
        ("temperature_init", 0.0),
        ("temperature_init", 0.05),  # below the default min_temperature
        ("min_temperature", 0.001),
        ("augment", "strong"),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(VcdmError, match=f"EncoderConfig.{field}"):
        EncoderConfig(**{field: value})


def test_logit_scale_is_clamped_as_in_clip():
    cfg = dataclasses.replace(TINY, temperature_init=0.2, min_temperature=0.05)
    model = ConvEncoder(cfg)
    assert model.logit_scale().item() == pytest.approx(1 / 0.2)
    with torch.no_grad():
        model.log_inv_temperature.fill_(10.0)
    assert model.logit_scale().item() == pytest.approx(1 / 0.05)
    with torch.no_grad():
        model.log_inv_temperature.fill_(-10.0)
    assert model.logit_scale().item() == pytest.approx(1.0)


class OneHotModel(nn.Module):
    """Embeds an image as its normalised pixels, with a fixed logit scale."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return F.normalize(x.flatten(1), dim=1)

    def logit_scale(self):
        return torch.tensor(self.scale)


def test_infonce_matches_the_closed_form_for_orthogonal_embeddings():
    # B orthonormal embeddings, identical views: each row of the similarity matrix is s on the diagonal and
    # 0 elsewhere, so both cross-entropy directions equal log(e^s + B - 1) - s.
    b, s = 4, 2.0
    x = torch.eye(b).view(b, 1, 2, 2)
    loss = ContrastiveTask(IDENTITY).loss(OneHotModel(s), {"image": x}, torch.Generator().manual_seed(0))
    assert loss.shape == (b,)
    assert torch.allclose(loss, torch.full((b,), math.log(math.exp(s) + b - 1) - s))


def test_contrastive_loss_is_deterministic_and_reaches_all_parameters():
    torch.manual_seed(0)
    model = ConvEncoder(TINY)
    task = ContrastiveTask(TINY.augment)
    batch = {"image": _images(6), "label": torch.arange(6)}
    a = task.loss(model, batch, torch.Generator().manual_seed(1))
    b = task.loss(model, batch, torch.Generator().manual_seed(1))
    assert a.shape == (6,) and torch.equal(a, b) and bool((a > 0).all())
    a.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = ConvEncoder(TINY)
    task = ContrastiveTask(
        AugmentConfig(max_rotation_deg=5.0, max_translate=0.05, contrast=0.1, brightness=0.05)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    batch = {"image": _images(16)}
    losses = []
    for _ in range(12):
        loss = task.loss(model, batch, gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3])


def test_learned_embedder_wraps_the_encoder():
    torch.manual_seed(0)
    encoder = ConvEncoder(TINY).train()
    embedder = LearnedEmbedder(encoder)
    assert isinstance(embedder, Embedder) and embedder.dim == TINY.dim and not encoder.training
    x = _images(5)
    y = embedder.encode_images(x)
    assert y.shape == (5, TINY.dim) and not y.requires_grad
    assert torch.equal(y, encoder(x).detach())


def test_learned_embedder_errors():
    embedder = LearnedEmbedder(ConvEncoder(TINY))
    with pytest.raises(VcdmError, match=r"\(B, 1, 8, 8\)"):
        embedder.encode_images(_images(2, c=3))
    with pytest.raises(VcdmError, match="no text encoder"):
        embedder.encode_text(["a digit"])
