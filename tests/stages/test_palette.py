"""The Palette stage: its condition channels, null condition, training, export and sampling."""

import pytest
import torch
from fake_data import blobs

from vcdm.config import apply_overrides, preset
from vcdm.data import ImageData
from vcdm.data.masks import fixed_masks
from vcdm.editing import PaletteModel, colorize, inpaint, load_palette, uncrop
from vcdm.errors import VcdmError
from vcdm.networks import UNet
from vcdm.stages import load_model, resolve_for_data, train_stage
from vcdm.stages.palette import luma, palette_condition


@pytest.fixture(scope="module")
def data():
    return blobs(n=32, size=16)


def _cfg(task="inpaint", *overrides):
    return apply_overrides(
        preset("tiny"), [f"palette.task={task}", "palette.train.total_nimg=64", *overrides]
    )


@pytest.mark.parametrize("task,extra", [("inpaint", 4), ("uncrop", 4), ("colorize", 1)])
def test_resolve_sets_the_condition_channels(tmp_path, data, task, extra):
    net = resolve_for_data(_cfg(task), data, tmp_path).palette.net
    assert (net.image_size, net.in_channels, net.extra_in_channels, net.extra_in_nullable) == (
        16,
        3,
        extra,
        True,
    )
    assert UNet(net).conv_in.in_channels == 3 + extra


def test_condition_is_the_masked_image_and_the_mask_or_the_luma():
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    masks = fixed_masks("inpaint", range(2), 8)
    c = palette_condition("inpaint", images, masks)
    assert c.shape == (2, 4, 8, 8)
    assert torch.equal(c[:, :3][masks.expand(-1, 3, -1, -1).bool()], torch.zeros(int(masks.sum()) * 3))
    assert torch.equal(c[:, 3:], 2 * masks - 1)  # +1 to fill, -1 known: a real condition is never all 0
    gray = palette_condition("colorize", images)
    assert gray.shape == (2, 1, 8, 8) and torch.allclose(gray, luma(images))
    assert torch.allclose(luma(torch.ones(1, 3, 2, 2)), torch.ones(1, 1, 2, 2))  # white stays white
    with pytest.raises(VcdmError, match="RGB"):
        palette_condition("colorize", images[:, :1])
    with pytest.raises(VcdmError, match="masks"):
        palette_condition("inpaint", images, None)


def test_null_replaces_the_image_condition(tmp_path, data):
    torch.manual_seed(0)
    net = UNet(resolve_for_data(_cfg(), data, tmp_path).palette.net).eval()
    torch.nn.init.normal_(net.conv_out.weight)  # zero-initialised: give the output something to show
    x, c_noise = torch.randn(2, 3, 16, 16), torch.zeros(2)
    a, b = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    null = torch.ones(2, dtype=torch.bool)
    assert torch.equal(
        net(x, c_noise, {"lowres": a, "null": null}), net(x, c_noise, {"lowres": b, "null": null})
    )
    assert not torch.allclose(net(x, c_noise, {"lowres": a}), net(x, c_noise, {"lowres": b}))


def test_colorize_on_grayscale_data_names_the_field(tmp_path):
    gray = ImageData(torch.zeros(8, 1, 16, 16, dtype=torch.uint8), None, (), "gray")
    with pytest.raises(VcdmError, match="palette.task 'colorize' needs RGB data"):
        train_stage("palette", tmp_path, _cfg("colorize"), gray, progress=False)
    with pytest.raises(VcdmError, match="palette.task must be one of"):
        _cfg("denoise")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    runs = {}
    for task in ("inpaint", "colorize"):
        run = tmp_path_factory.mktemp(task)
        train_stage("palette", run, _cfg(task), data, progress=False)
        runs[task] = run
    return runs


def test_trains_exports_and_loads_as_a_palette_model(trained):
    model, meta = load_model(trained["inpaint"] / "palette", "palette")
    assert meta["kind"] == "palette" and meta["task"] == "inpaint" and meta["nimg"] == 64
    with pytest.raises(VcdmError, match="expected a 'image' model"):
        load_model(trained["inpaint"] / "palette", "image")


def test_inpaint_keeps_known_pixels_and_depends_on_the_seed_only(trained, data):
    palette = load_palette(trained["inpaint"])
    images = data.as_float()[:3]
    masks = fixed_masks("inpaint", range(3), 16)
    out = inpaint(palette, images, masks, [0, 1, 2], num_steps=3)
    keep = (masks == 0).expand_as(out)
    assert out.shape == (3, 3, 16, 16) and torch.equal(out[keep], images[keep])
    again = inpaint(palette, images[1:2], masks[1:2], [1], num_steps=3)
    assert torch.allclose(again, out[1:2], atol=1e-5)
    guided = inpaint(palette, images, masks, [0, 1, 2], num_steps=3, guidance=2.0)
    assert not torch.allclose(guided, out)
    border = uncrop(palette, images[:1], [0], side="left", width=0.25, num_steps=3)
    assert torch.equal(border[..., 4:], images[:1, ..., 4:])


def test_colorize_takes_no_mask_and_inpaint_models_do_not_colorize(trained, data):
    palette = load_palette(trained["colorize"])
    assert isinstance(palette, PaletteModel) and palette.task == "colorize"
    out = colorize(palette, data.as_float()[:2], [0, 1], num_steps=3)
    assert out.shape == (2, 3, 16, 16) and out.abs().max() <= 1
    with pytest.raises(VcdmError, match="takes no mask"):
        inpaint(palette, data.as_float()[:1], fixed_masks("inpaint", [0], 16), [0], num_steps=3)
    with pytest.raises(VcdmError, match="not 'colorize'"):
        colorize(load_palette(trained["inpaint"]), data.as_float()[:1], [0], num_steps=3)


def test_load_palette_without_an_export_says_how_to_train_one(tmp_path):
    with pytest.raises(VcdmError, match="vcdm train palette"):
        load_palette(tmp_path)


# ---- latent space (palette.space 'latent'): the run's autoencoder, f = 4, 2 latent channels ----

AE = ["autoencoder.net.base_channels=8", "autoencoder.net.latent_channels=2", "autoencoder.train.batch_size=8",
      "autoencoder.train.total_nimg=32", "autoencoder.disc_start_nimg=16", "autoencoder.disc_channels=8"]  # fmt: skip
LATENT = [*AE, "palette.space=latent", "palette.diffusion.sigma_data=1"]


@pytest.fixture(scope="module")
def latent(tmp_path_factory, data):
    """A run with an autoencoder and latent Palette models for inpaint and colorize (one run each)."""
    runs = {}
    for task in ("inpaint", "colorize"):
        run = tmp_path_factory.mktemp(f"latent-{task}")
        train_stage("autoencoder", run, _cfg(task, *AE), data, progress=False)
        train_stage("palette", run, _cfg(task, *LATENT), data, progress=False)
        runs[task] = run
    return runs


def test_latent_condition_is_the_encoded_masked_image_and_the_max_pooled_mask(latent, data):
    from vcdm.stages.autoencoder import load_latent_space

    space, _ = load_latent_space(latent["inpaint"])
    images = data.as_float()[:2]
    masks = torch.zeros(2, 1, 16, 16)
    masks[0, :, 5, 6] = 1  # one pixel makes its whole 4x4 cell a hole
    c = palette_condition("inpaint", images, masks, space)
    assert c.shape == (2, 3, 4, 4)
    torch.testing.assert_close(c[:, :2], space.encode(images * (1 - masks)))
    hole = torch.full((2, 1, 4, 4), -1.0)
    hole[0, 0, 1, 1] = 1
    assert torch.equal(c[:, 2:], hole)
    gray = palette_condition("colorize", images, space=space)
    torch.testing.assert_close(gray, space.encode(luma(images).expand(-1, 3, -1, -1)))


def test_latent_palette_trains_on_latents_and_fills_images_of_the_datas_shape(latent, data):
    palette = load_palette(latent["inpaint"])
    assert palette.meta["space"] == "latent" and palette.meta["net"]["extra_in_channels"] == 3  # 2 + the mask
    assert palette.sample_shape == (2, 4, 4) and palette.image_shape == (3, 16, 16)
    images = data.as_float()[:3]
    masks = fixed_masks("inpaint", range(3), 16)
    out = inpaint(palette, images, masks, [0, 1, 2], num_steps=3)
    keep = (masks == 0).expand_as(out)
    assert out.shape == (3, 3, 16, 16) and out.abs().max() <= 1 and torch.equal(out[keep], images[keep])
    torch.testing.assert_close(inpaint(palette, images[1:2], masks[1:2], [1], num_steps=3), out[1:2])
    # the condition reaches the network: another image under the same mask and seed fills differently
    other = inpaint(palette, data.as_float()[3:4], masks[:1], [0], num_steps=3)
    hole = masks[0].expand(3, -1, -1).bool()
    assert not torch.allclose(other[0][hole], out[0][hole])
    colour = load_palette(latent["colorize"])
    assert colour.meta["net"]["extra_in_channels"] == 2  # the gray image's latent
    filled = colorize(colour, images[:2], [0, 1], num_steps=3)
    assert filled.shape == (2, 3, 16, 16) and filled.abs().max() <= 1


def test_latent_palette_without_its_autoencoder_is_one_line(latent, data, tmp_path):
    import json

    with pytest.raises(VcdmError, match="palette.space must be one of"):
        _cfg("inpaint", "palette.space=voxel")
    with pytest.raises(VcdmError, match="no autoencoder export; train one with `vcdm train autoencoder"):
        train_stage("palette", tmp_path, _cfg("inpaint", *LATENT), data, progress=False)
    odd = ImageData(torch.zeros(8, 3, 18, 18, dtype=torch.uint8), None, (), "odd")
    with pytest.raises(VcdmError, match=r"palette.space 'latent' needs the data's size 18 \(data.image_size\) to "
                       r"be a multiple of autoencoder.net.factor \(4\)"):  # fmt: skip
        train_stage("palette", tmp_path / "odd", _cfg("inpaint", *LATENT), odd, progress=False)
    meta_path = latent["inpaint"] / "autoencoder" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"nimg": meta["nimg"] + 1}))  # as if it had been retrained
    try:
        with pytest.raises(VcdmError, match="not the autoencoder this palette was trained on"):
            load_palette(latent["inpaint"])
    finally:
        meta_path.write_text(json.dumps(meta))
