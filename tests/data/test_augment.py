import dataclasses
import json

import pytest
import torch

from vcdm.data.augment import AugmentConfig, augment
from vcdm.errors import VcdmError

IDENTITY = AugmentConfig(
    max_rotation_deg=0.0, max_translate=0.0, scale_range=(1.0, 1.0), hflip=False, contrast=0.0, brightness=0.0
)
STRONG = AugmentConfig(
    max_rotation_deg=30.0, max_translate=0.3, scale_range=(0.5, 1.5), hflip=True, contrast=1.0, brightness=2.0
)


def _images(b=8, c=1, h=12, w=12, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_zero_magnitudes_give_the_identity():
    x = _images()
    assert torch.equal(augment(x, IDENTITY, _gen()), x)


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (3, 3, 16, 20)])
def test_shape_dtype_and_range(shape):
    x = torch.rand(shape, generator=_gen(1)) * 2 - 1
    out = augment(x, STRONG, _gen())
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    assert not torch.allclose(out, x)


def test_same_generator_state_gives_same_output():
    x = _images()
    cfg = AugmentConfig(hflip=True)
    assert torch.equal(augment(x, cfg, _gen(3)), augment(x, cfg, _gen(3)))
    assert not torch.equal(augment(x, cfg, _gen(3)), augment(x, cfg, _gen(4)))
    # Each sample gets its own draw: identical inputs come out different.
    same = x[:1].expand(4, -1, -1, -1)
    out = augment(same, cfg, _gen())
    assert not torch.equal(out[0], out[1])


def test_generator_advances_the_same_for_every_config():
    x = _images()
    g1, g2 = _gen(5), _gen(5)
    augment(x, IDENTITY, g1)
    augment(x, STRONG, g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_hflip_only_when_enabled():
    x = _images(b=32, h=6, w=6)
    flip_only = dataclasses.replace(IDENTITY, hflip=True)
    out = augment(x, flip_only, _gen())
    flipped = torch.tensor([torch.allclose(o, xi.flip(-1), atol=1e-5) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x)])
    assert bool((flipped | kept).all()) and flipped.any() and kept.any()
    assert torch.equal(augment(x, IDENTITY, _gen()), x)


def test_gray_background_stays_background():
    # A blank digit canvas (all -1) must stay blank under any warp: no zero-padding seams.
    x = torch.full((6, 1, 28, 28), -1.0)
    geometric = dataclasses.replace(STRONG, contrast=0.0, brightness=0.0)
    assert torch.allclose(augment(x, geometric, _gen()), x, atol=1e-6)


def test_translation_moves_content_by_at_most_the_limit():
    x = torch.full((16, 1, 20, 20), -1.0)
    x[:, :, 8:12, 8:12] = 1.0
    cfg = dataclasses.replace(IDENTITY, max_translate=0.2)
    out = augment(x, cfg, _gen())
    grid = torch.arange(20.0)
    w = out + 1  # mass of the bright square
    cy = (w.sum(-1) * grid).sum(-1) / w.sum((-1, -2))
    cx = (w.sum(-2) * grid).sum(-1) / w.sum((-1, -2))
    shift = torch.stack([cy - 9.5, cx - 9.5]).abs()
    assert shift.max() <= 0.2 * 20 + 0.5
    assert shift.max() > 1.0


def test_contrast_and_brightness_are_per_image_affine_maps_of_the_pixels():
    x = _images(b=4) * 0.3  # stays inside [-1, 1] after jitter, so nothing is clamped
    cfg = dataclasses.replace(IDENTITY, contrast=0.5, brightness=0.2)
    out = augment(x, cfg, _gen())
    for o, xi in zip(out, x):
        a = torch.stack([xi.flatten(), torch.ones(xi.numel())], 1)
        coef = torch.linalg.lstsq(a, o.flatten()[:, None]).solution.flatten()
        assert 0.5 - 1e-4 <= coef[0] <= 1.5 + 1e-4
        assert torch.allclose(a @ coef, o.flatten(), atol=1e-5)


def test_config_json_round_trip_and_list_scale_range():
    cfg = AugmentConfig(scale_range=[0.8, 1.25])
    assert cfg.scale_range == (0.8, 1.25)
    assert AugmentConfig(**json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_rotation_deg", -1.0),
        ("max_translate", 1.5),
        ("scale_range", (1.2, 0.8)),
        ("scale_range", (0.0, 1.0)),
        ("scale_range", (1.0,)),
        ("hflip", "yes"),
        ("contrast", 2.0),
        ("brightness", -0.1),
    ],
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(VcdmError, match=field):
        AugmentConfig(**{field: value})
