"""Tests for the embedding-conditioned U-Net decoder (vcdm.networks.unet)."""

import dataclasses
import json

import pytest
import torch
from fake_nets import seeded_net

from vcdm.errors import VcdmError
from vcdm.networks import UNet, UNetConfig

# Shape tests run at 28/32/64; the behaviour tests use 8x8 images (8 -> 4 -> 2) to stay fast.
TINY = dict(image_size=8, base_channels=8, channel_mults=(1, 2, 2), attn_heads=2)


def build(seed=0, **overrides) -> UNet:
    """A tiny U-Net with its init drawn from `seed` (global RNG left untouched) and zero-inits perturbed."""
    return seeded_net(lambda: UNet(UNetConfig(**{**TINY, **overrides})), seed)


def inputs(batch=3, size=8, channels=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=generator)
    return x, torch.randn(batch, generator=generator)


@pytest.mark.parametrize(
    "size, options",
    [
        (28, {}),
        (28, {"emb_dim": 5, "num_classes": 3, "attn_resolutions": (7,)}),
        (32, {"emb_dim": 5, "attn_resolutions": (16, 8)}),
        (32, {"num_classes": 4, "in_channels": 3, "out_channels": 6, "noise_embedding": "positional"}),
        (64, {"channel_mults": (1, 1, 2, 2), "attn_resolutions": (8,), "emb_dim": 2, "num_res_blocks": 2}),
        (64, {"in_channels": 3, "extra_in_channels": 3, "emb_dim": 4}),
    ],
)
def test_shapes(size, options):
    net = build(image_size=size, **options)
    cfg = net.cfg
    x, c_noise = inputs(batch=2, size=size, channels=cfg.in_channels)
    cond = {"emb": torch.randn(2, cfg.emb_dim), "label": torch.tensor([0, 1]) % max(cfg.num_classes, 1)}
    if cfg.extra_in_channels:
        cond["lowres"] = torch.randn(2, cfg.extra_in_channels, size, size)
    out = net(x, c_noise, cond)
    assert out.shape == (2, cfg.out_channels or cfg.in_channels, size, size)
    assert out.dtype == torch.float32 and bool(out.isfinite().all())


def test_zero_init_output_and_residual_branches():
    cfg = UNetConfig(**TINY, emb_dim=4)
    net = UNet(cfg)
    x, c_noise = inputs()
    assert torch.equal(net(x, c_noise, {"emb": torch.randn(3, 4)}), torch.zeros(3, 1, 8, 8))
    assert all(
        not block.res.conv2.weight.any() for block in [*net.down, *net.mid, *net.up] if hasattr(block, "res")
    )


def test_null_mechanism():
    net = build(emb_dim=5, num_classes=3)
    x, c_noise = inputs()
    emb, label = torch.randn(3, 5), torch.tensor([2, 0, 1])
    all_null = torch.ones(3, dtype=torch.bool)
    uncond = net(x, c_noise, None)
    torch.testing.assert_close(net(x, c_noise, {"emb": emb, "label": label, "null": all_null}), uncond)
    torch.testing.assert_close(net(x, c_noise, {}), uncond)
    # Changing emb changes the output where null is False, not where it is True.
    null = torch.tensor([False, True, False])
    a = net(x, c_noise, {"emb": emb, "label": label, "null": null})
    b = net(x, c_noise, {"emb": emb + 1.0, "label": label, "null": null})
    diff = (a - b).abs().flatten(1).amax(dim=1)
    assert diff[0] > 1e-4 and diff[2] > 1e-4 and diff[1] == 0
    torch.testing.assert_close(a[1], uncond[1])
    # The label matters too.
    c = net(x, c_noise, {"emb": emb, "label": torch.tensor([0, 0, 0])})
    assert (c[0] - net(x, c_noise, {"emb": emb, "label": label})[0]).abs().max() > 1e-4


def test_noise_level_and_lowres_change_the_output():
    net = build(extra_in_channels=1)
    x, c_noise = inputs()
    lowres = torch.randn(3, 1, 8, 8)
    out = net(x, c_noise, {"lowres": lowres})
    assert (net(x, c_noise + 0.5, {"lowres": lowres}) - out).abs().max() > 1e-4
    assert (net(x, c_noise, {"lowres": lowres + 1}) - out).abs().max() > 1e-4
    with pytest.raises(VcdmError, match="lowres"):
        net(x, c_noise, None)
    with pytest.raises(VcdmError, match="lowres"):
        net(x, c_noise, {"lowres": torch.randn(3, 1, 4, 4)})


def test_augmentation_level_reaches_the_network():
    net = build(extra_in_channels=1, aug_embedding=True)
    x, c_noise = inputs()
    lowres = torch.randn(3, 1, 8, 8)

    def run(sigma_aug, **extra):
        return net(x, c_noise, {"lowres": lowres, "aug_sigma": torch.as_tensor(sigma_aug), **extra})

    clean = run([0.0, 0.0, 0.0])  # level 0 is an ordinary, finite, deterministic input
    assert bool(clean.isfinite().all()) and torch.equal(clean, run([0.0, 0.0, 0.0]))
    noisy = run([0.0, 0.1, 0.5])
    diff = (noisy - clean).abs().flatten(1).amax(dim=1)
    assert diff[0] == 0 and diff[1] > 1e-4 and diff[2] > 1e-4  # each sample reads its own level
    assert (run([0.0, 0.1, 0.2]) - noisy)[2].abs().max() > 1e-4
    for bad, match in ((None, r"aug_sigma.*got None"), (torch.zeros(2), r"aug_sigma.*\(3,\)"),
                       (-torch.ones(3), "levels >= 0")):  # fmt: skip
        cond = {"lowres": lowres} | ({} if bad is None else {"aug_sigma": bad})
        with pytest.raises(VcdmError, match=match):
            net(x, c_noise, cond)


def test_augmentation_embedding_only_when_asked_and_after_every_other_module():
    plain = build(seed=3, extra_in_channels=1)
    with_aug = build(seed=3, extra_in_channels=1, aug_embedding=True)
    assert plain.aug_embedding is None and not any("aug" in name for name, _ in plain.named_parameters())
    # the other modules draw the same initial weights: the new one is created last
    extra = {name for name in with_aug.state_dict() if name.startswith("aug_embedding.")}
    assert extra and set(with_aug.state_dict()) - extra == set(plain.state_dict())
    assert all(torch.equal(t, with_aug.state_dict()[name]) for name, t in plain.state_dict().items())
    # its Fourier frequencies differ from the noise level's
    assert not torch.equal(with_aug.aug_embedding.features.freqs, with_aug.noise_embedding.features.freqs)
    with pytest.raises(VcdmError, match="UNetConfig.aug_embedding"):
        UNetConfig(aug_embedding=1)


def test_rejects_bad_input_shape():
    net = build()
    with pytest.raises(VcdmError, match="x: expected"):
        net(torch.randn(2, 1, 10, 10), torch.zeros(2))
    with pytest.raises(VcdmError, match="x: expected"):
        net(torch.randn(2, 3, 8, 8), torch.zeros(2))


def test_default_parameter_count():
    counts = {
        "default": UNetConfig(),
        "emb32": UNetConfig(emb_dim=32),
    }
    params = {name: sum(p.numel() for p in UNet(cfg).parameters()) for name, cfg in counts.items()}
    print(f"U-Net parameters: {params}")
    # Golden values: change only on purpose (an architecture change).
    assert params == {"default": 1_124_161, "emb32": 1_128_513}


def test_determinism():
    x, c_noise = inputs()
    cond = {"emb": torch.randn(3, 5)}
    a, b = build(seed=7, emb_dim=5), build(seed=7, emb_dim=5)
    out = a(x, c_noise, cond)
    assert torch.equal(out, a(x, c_noise, cond))
    assert torch.equal(out, b(x, c_noise, cond))
    assert not torch.equal(out, build(seed=8, emb_dim=5)(x, c_noise, cond))


def test_gradient_reaches_every_parameter():
    net = build(emb_dim=5, num_classes=3, attn_resolutions=(4,), extra_in_channels=1).train()
    x, c_noise = inputs()
    cond = {
        "emb": torch.randn(3, 5),
        "label": torch.tensor([0, 1, 2]),
        "null": torch.tensor([True, False, False]),
        "lowres": torch.randn(3, 1, 8, 8),
    }
    net(x, c_noise, cond).square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_bf16_autocast_returns_float32():
    net = build(emb_dim=5, attn_resolutions=(2,))
    x, c_noise = inputs()
    cond = {"emb": torch.randn(3, 5)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, c_noise, cond)
    assert out.dtype == torch.float32 and out.shape == (3, 1, 8, 8)
    reference = net(x, c_noise, cond)
    assert (out - reference).abs().max() < 0.1 * reference.abs().max() + 1e-3


def test_config_json_round_trip():
    cfg = UNetConfig(image_size=32, channel_mults=(1, 2), attn_resolutions=(16,), emb_dim=8)
    again = UNetConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg and isinstance(again.channel_mults, tuple)
    assert cfg.resolutions == (32, 16)


@pytest.mark.parametrize(
    "field, value",
    [
        ("image_size", 30),  # not divisible by 4 for three levels
        ("image_size", 0),
        ("in_channels", 0),
        ("out_channels", 0),
        ("extra_in_channels", -1),
        ("base_channels", 2.5),
        ("channel_mults", ()),
        ("channel_mults", (1, 0)),
        ("num_res_blocks", 0),
        ("attn_resolutions", (5,)),
        ("attn_heads", 3),  # 32 channels at resolution 28 are not divisible by 3
        ("dropout", 1.0),
        ("noise_embedding", "learned"),
        ("emb_dim", -1),
        ("num_classes", True),
    ],
)
def test_config_validation_names_the_field(field, value):
    overrides = {field: value}
    if field == "attn_heads":
        overrides["attn_resolutions"] = (28,)
    with pytest.raises(VcdmError, match=f"UNetConfig.{field}"):
        UNet(UNetConfig(**overrides))  # the size-dependent checks run when the network is built


def test_size_checks_wait_for_the_resolved_image_size():
    cfg = UNetConfig(image_size=28, attn_resolutions=(8,))  # valid once the data's 32x32 is filled in
    with pytest.raises(
        VcdmError, match=r"decoder.net.attn_resolutions: 8 is not a feature-map size .* \(28, 14, 7\)"
    ):
        cfg.check_sizes("decoder.net")
    dataclasses.replace(cfg, image_size=32).check_sizes("decoder.net")
