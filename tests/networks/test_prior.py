"""Tests for the transformer prior over embeddings (vcdm.networks.prior)."""

import dataclasses
import json

import pytest
import torch
from fake_nets import seeded_net

from vcdm.errors import VcdmError
from vcdm.networks import PriorConfig, PriorTransformer

TINY = dict(emb_dim=6, width=16, depth=2, heads=2)


def build(seed=0, **overrides) -> PriorTransformer:
    """A tiny prior with its init drawn from `seed` (global RNG left untouched) and zero-inits perturbed."""
    return seeded_net(lambda: PriorTransformer(PriorConfig(**{**TINY, **overrides})), seed)


def inputs(batch=4, emb_dim=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, emb_dim, generator=generator), torch.randn(batch, generator=generator)


@pytest.mark.parametrize(
    "options", [{}, {"num_classes": 5}, {"noise_embedding": "positional", "mlp_ratio": 2.5}]
)
def test_shape_and_dtype(options):
    net = build(**options)
    y, c_noise = inputs()
    out = net(y, c_noise, {"label": torch.tensor([0, 1, 2, 3])} if options.get("num_classes") else None)
    assert out.shape == (4, 6) and out.dtype == torch.float32 and bool(out.isfinite().all())


def test_zero_init_output():
    net = PriorTransformer(PriorConfig(**TINY))
    y, c_noise = inputs()
    assert torch.equal(net(y, c_noise), torch.zeros(4, 6))


def test_output_depends_on_input_noise_level_and_label():
    net = build(num_classes=3)
    y, c_noise = inputs()
    label = torch.tensor([0, 1, 2, 0])
    out = net(y, c_noise, {"label": label})
    assert (net(y + 1, c_noise, {"label": label}) - out).abs().amax(dim=1).min() > 1e-5
    assert (net(y, c_noise + 0.5, {"label": label}) - out).abs().amax(dim=1).min() > 1e-5
    assert (net(y, c_noise, {"label": (label + 1) % 3}) - out).abs().amax(dim=1).min() > 1e-5
    # Samples do not interact: each output depends only on its own row.
    torch.testing.assert_close(net(y[:2], c_noise[:2], {"label": label[:2]}), out[:2])


def test_null_mechanism():
    net = build(num_classes=3)
    y, c_noise = inputs()
    label = torch.tensor([0, 1, 2, 0])
    uncond = net(y, c_noise, None)
    torch.testing.assert_close(
        net(y, c_noise, {"label": label, "null": torch.ones(4, dtype=torch.bool)}), uncond
    )
    torch.testing.assert_close(net(y, c_noise, {"emb": torch.randn(4, 6)}), uncond)  # no label: unconditional
    null = torch.tensor([True, False, True, False])
    a = net(y, c_noise, {"label": label, "null": null})
    b = net(y, c_noise, {"label": (label + 1) % 3, "null": null})
    diff = (a - b).abs().amax(dim=1)
    assert diff[0] == 0 and diff[2] == 0 and diff[1] > 1e-5 and diff[3] > 1e-5
    torch.testing.assert_close(a[null], uncond[null])


def test_unconditional_prior_ignores_labels():
    net = build()
    y, c_noise = inputs()
    assert torch.equal(net(y, c_noise, {"label": torch.tensor([0, 1, 2, 3])}), net(y, c_noise))


def test_default_parameter_count():
    params = sum(p.numel() for p in PriorTransformer(PriorConfig()).parameters())
    print(f"prior parameters (default config): {params}")
    assert params == 3_309_344  # golden value: change only on purpose


def test_determinism():
    y, c_noise = inputs()
    out = build(seed=3)(y, c_noise)
    assert torch.equal(out, build(seed=3)(y, c_noise))
    assert not torch.equal(out, build(seed=4)(y, c_noise))


def test_gradient_reaches_every_parameter():
    net = build(num_classes=3, dropout=0.1).train()
    y, c_noise = inputs()
    cond = {"label": torch.tensor([0, 1, 2, 0]), "null": torch.tensor([True, False, False, False])}
    net(y, c_noise, cond).square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_bf16_autocast_returns_float32():
    net = build()
    y, c_noise = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(y, c_noise)
    reference = net(y, c_noise)
    assert out.dtype == torch.float32 and out.shape == (4, 6)
    assert (out - reference).abs().max() < 0.1 * reference.abs().max() + 1e-3


def test_rejects_bad_input_shape():
    with pytest.raises(VcdmError, match="y: expected"):
        build()(torch.randn(4, 5), torch.zeros(4))


def test_config_json_round_trip():
    cfg = PriorConfig(num_classes=10, mlp_ratio=2.0)
    assert PriorConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg


@pytest.mark.parametrize(
    "field, value",
    [
        ("emb_dim", 0),
        ("width", -4),
        ("depth", 0),
        ("heads", 3),  # 256 is not divisible by 3
        ("mlp_ratio", 0.0),
        ("num_classes", -1),
        ("dropout", -0.1),
        ("noise_embedding", "none"),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(VcdmError, match=f"PriorConfig.{field}"):
        PriorConfig(**{field: value})
