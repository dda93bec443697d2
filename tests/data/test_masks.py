"""Inpainting and uncropping masks: shapes, coverage, determinism, the user's PNG."""

import numpy as np
import pytest
import torch
from PIL import Image

from vcdm.data.masks import MaskConfig, draw_mask, fixed_masks, random_masks, read_mask, uncrop_mask
from vcdm.errors import VcdmError


def test_inpaint_masks_are_binary_nonempty_and_partial():
    masks = random_masks("inpaint", 32, 32, torch.Generator().manual_seed(0))
    assert masks.shape == (32, 1, 32, 32)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    cover = masks.mean((1, 2, 3))
    assert (cover > 0).all() and (cover < 1).all()
    assert len(set(cover.tolist())) > 16  # varied, not one shape


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom", "around"])
def test_uncrop_masks_cover_only_the_border(side):
    mask = uncrop_mask(16, side, 0.25)[0]
    assert mask[6:10, 6:10].sum() == 0  # the centre is known
    rows, cols = mask.nonzero(as_tuple=True)
    on_border = {"left": cols < 4, "right": cols >= 12, "top": rows < 4, "bottom": rows >= 12,
                 "around": (rows < 2) | (rows >= 14) | (cols < 2) | (cols >= 14)}[side]  # fmt: skip
    assert on_border.all() and len(rows) > 0


def test_random_uncrop_masks_are_bands():
    for mask in random_masks("uncrop", 20, 16, torch.Generator().manual_seed(1)):
        # the default band is at most half the side: one of the four border-anchored halves holds it all
        rows, cols = mask[0].nonzero(as_tuple=True)
        halves = [(cols < 8).all(), (cols >= 8).all(), (rows < 8).all(), (rows >= 8).all()]
        assert len(rows) > 0 and (any(halves) or mask[0, 4:12, 4:12].sum() == 0)


def test_fixed_masks_depend_on_the_index_only():
    a = fixed_masks("inpaint", range(6), 16, seed=3)
    b = fixed_masks("inpaint", [4, 5], 16, seed=3)
    assert torch.equal(a[4:], b)
    assert not torch.equal(a, fixed_masks("inpaint", range(6), 16, seed=4))


def test_unknown_task_and_bad_config_name_the_field():
    with pytest.raises(VcdmError, match="inpaint"):
        draw_mask("colorize", 16, torch.Generator())
    with pytest.raises(VcdmError, match="palette.masks.band"):
        MaskConfig(band=(0.5, 0.2))
    with pytest.raises(VcdmError, match="palette.masks.strokes"):
        MaskConfig(strokes=(-1, 2))


def test_read_mask_thresholds_and_refuses_the_wrong_size(tmp_path):
    arr = np.zeros((8, 8), np.uint8)
    arr[:, :3] = 255
    Image.fromarray(arr).convert("RGB").save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png", 8)
    assert mask.shape == (1, 1, 8, 8) and mask[0, 0, :, :3].all() and mask[0, 0, :, 3:].sum() == 0
    with pytest.raises(VcdmError, match=r"m\.png: the mask is 8x8 but the image is 16x16"):
        read_mask(tmp_path / "m.png", 16)
    with pytest.raises(VcdmError, match="not found"):
        read_mask(tmp_path / "none.png", 8)
