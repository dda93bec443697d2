"""Tests for the shared network blocks in vcdm.networks.layers."""

import math

import pytest
import torch

from vcdm.errors import VcdmError
from vcdm.networks.layers import (
    AttentionBlock2d,
    ConditionProjector,
    FourierFeatures,
    NoiseEmbedding,
    PositionalEmbedding,
    SelfAttention,
    group_norm,
)


def _seeded(module_factory, seed=0):
    """Build a module with its default init drawn from `seed`, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return module_factory()


def test_fourier_features_are_unit_phasors_with_fixed_frequencies():
    a, b = FourierFeatures(16), FourierFeatures(16)
    assert torch.equal(a.freqs, b.freqs)  # drawn from a fixed seed, not the global RNG
    assert "freqs" in a.state_dict()
    c_noise = torch.linspace(-2, 2, 5)
    feats = a(c_noise)
    assert feats.shape == (5, 16) and feats.dtype == torch.float32
    torch.testing.assert_close(feats[:, :8] ** 2 + feats[:, 8:] ** 2, torch.ones(5, 8))
    expected = torch.cos(2 * math.pi * a.freqs[3] * c_noise)
    torch.testing.assert_close(feats[:, 3], expected)


def test_positional_embedding_values():
    emb = PositionalEmbedding(8, max_positions=10000)
    feats = emb(torch.tensor([0.0, 999.0]))
    assert feats.shape == (2, 8)
    torch.testing.assert_close(feats[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    # Frequency i is (1/10000)^(i/4); the first is 1, so channel 0 is cos(999).
    torch.testing.assert_close(feats[1, 0], torch.tensor(math.cos(999.0)))
    torch.testing.assert_close(feats[1, 5], torch.tensor(math.sin(999.0 * 10000 ** (-1 / 4))))


def test_noise_embedding_validates_kind_and_shape():
    with pytest.raises(VcdmError, match="kind"):
        NoiseEmbedding("gaussian", 8, 16)
    net = NoiseEmbedding("positional", 7, 16)  # odd feature counts are rounded up
    assert net(torch.zeros(3)).shape == (3, 16)
    with pytest.raises(VcdmError, match="c_noise"):
        net(torch.zeros(3, 1))


def test_condition_projector_null_mechanism():
    proj = _seeded(lambda: ConditionProjector(emb_dim=4, num_classes=3, out_dim=6))
    with torch.no_grad():
        proj.null.copy_(torch.arange(6.0))
    emb, label = torch.randn(3, 4), torch.tensor([0, 2, 1])
    full = proj({"emb": emb, "label": label}, 3)
    expected = proj.proj(torch.cat([emb, torch.nn.functional.one_hot(label, 3).float()], dim=1))
    torch.testing.assert_close(full, expected)
    null = torch.tensor([False, True, False])
    mixed = proj({"emb": emb, "label": label, "null": null}, 3)
    torch.testing.assert_close(mixed[1], proj.null.detach())
    torch.testing.assert_close(mixed[[0, 2]], full[[0, 2]])
    for cond in (None, {}, {"null": null}):  # nothing to project: every sample gets the null
        torch.testing.assert_close(proj(cond, 3), proj.null.detach().expand(3, -1))
    # A dropped sample's inputs are not read: placeholders give the same result and finite gradients.
    emb_nan = emb.clone()
    emb_nan[1] = float("nan")
    placeholder = proj({"emb": emb_nan, "label": torch.tensor([0, -1, 1]), "null": null}, 3)
    torch.testing.assert_close(placeholder, mixed)
    placeholder.sum().backward()
    assert all(bool(p.grad.isfinite().all()) for p in proj.parameters())


def test_condition_projector_without_inputs_is_always_null():
    proj = ConditionProjector(emb_dim=0, num_classes=0, out_dim=5)
    out = proj({"emb": torch.randn(2, 3), "label": torch.tensor([1, 2])}, 2)
    assert torch.equal(out, torch.zeros(2, 5))
    out.sum().backward()
    assert torch.equal(proj.null.grad, torch.full((5,), 2.0))


def test_condition_projector_rejects_bad_conditions():
    proj = ConditionProjector(emb_dim=4, num_classes=3, out_dim=6)
    with pytest.raises(VcdmError, match="missing 'label'"):
        proj({"emb": torch.randn(2, 4)}, 2)
    with pytest.raises(VcdmError, match=r"cond\['emb'\]"):
        proj({"emb": torch.randn(2, 5), "label": torch.tensor([0, 1])}, 2)
    with pytest.raises(VcdmError, match=r"cond\['label'\].*\[0, 3\)"):
        proj({"emb": torch.randn(2, 4), "label": torch.tensor([0, 3])}, 2)
    with pytest.raises(VcdmError, match=r"cond\['label'\]"):
        proj({"emb": torch.randn(2, 4), "label": torch.tensor([0.0, 1.0])}, 2)


@pytest.mark.parametrize("channels", [1, 3, 8, 24, 48, 64, 96, 128, 192, 256])
def test_group_norm_groups_divide_channels(channels):
    norm = group_norm(channels)
    assert channels % norm.num_groups == 0
    assert norm.num_groups <= 32 and (channels < 4 or channels // norm.num_groups >= 4)


def test_self_attention_matches_reference_and_is_permutation_equivariant():
    attn = _seeded(lambda: SelfAttention(8, heads=2)).eval()
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    out = attn(x)
    q, k, v = attn.qkv(x).split(8, dim=-1)
    heads = [
        torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(4), dim=-1) @ v[..., s]
        for s in (slice(0, 4), slice(4, 8))
    ]
    torch.testing.assert_close(out, attn.out(torch.cat(heads, dim=-1)))
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(attn(x[:, perm]), out[:, perm])
    with pytest.raises(VcdmError, match="heads"):
        SelfAttention(10, heads=4)


def test_attention_block_starts_as_identity_then_mixes_pixels():
    block = AttentionBlock2d(8, heads=2)
    x = torch.randn(2, 8, 3, 3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(block(x), x)
    with torch.no_grad():
        block.attn.out.weight.normal_(generator=torch.Generator().manual_seed(3))
    y = block(x)
    x2 = x.clone()
    x2[:, :, 0, 0] += 1.0
    changed = (block(x2) - y).abs().amax(dim=1)  # a change at one pixel reaches every other pixel
    assert bool((changed > 0).all())
