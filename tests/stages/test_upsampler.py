"""The upsampler stage (SR3 with conditioning augmentation): what the network is given, how it trains,
exports and loads, what condition dropout leaves alone, and the size errors; and the stages below it trained at
their own size (decoder.image_size, embedder.image_size)."""

import json
from dataclasses import replace

import pytest
import torch
from fake_data import blobs

from vcdm.config import ConditioningAugment, SampleConfig, apply_overrides, preset
from vcdm.data import resize_images
from vcdm.errors import VcdmError
from vcdm.stages import build_from_meta, load_model, resolve_for_data, train_stage
from vcdm.stages.upsampler import (
    UNSHUFFLE,
    UpsamplerTask,
    low_res_for,
    lowres_condition,
    random_blur,
    random_crops,
    sample_aug_sigma,
    upsample_lowres,
)


@pytest.fixture(scope="module")
def data():
    return blobs()


def _cfg(*overrides):
    return apply_overrides(
        preset("tiny"), ["upsampler.train.total_nimg=64", "upsampler.low_res=8", *overrides]
    )


def test_resolve_fills_the_sizes_and_the_network_takes_the_noisy_image_and_the_lowres_channels(
    tmp_path, data
):
    cfg = resolve_for_data(_cfg(), data, tmp_path)
    net = cfg.upsampler.net
    assert (net.image_size, net.in_channels, net.extra_in_channels, net.aug_embedding) == (16, 3, 3, True)
    # low_res: as set, else decoder.image_size when the decoder samples below the data's size, else half of it
    assert low_res_for(cfg, 16) == 8 and low_res_for(preset("tiny"), 16) == 8
    assert low_res_for(apply_overrides(preset("tiny"), ["decoder.image_size=8"]), 32) == 8
    assert low_res_for(apply_overrides(preset("tiny"), ["decoder.image_size=16"]), 16) == 8
    assert (
        resolve_for_data(preset("tiny"), data, tmp_path).upsampler.low_res is None
    )  # it follows the decoder
    meta = {"kind": "upsampler", "net": json.loads(json.dumps(net.__dict__)), "diffusion": {}}
    denoiser = build_from_meta(meta)
    seen = []
    denoiser.net.conv_in.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    x = torch.randn(2, 3, 16, 16)
    cond = lowres_condition(
        torch.rand(2, 3, 8, 8) * 2 - 1, 16, torch.tensor([0.0, 0.2]), torch.randn_like(x), True
    )
    assert denoiser(x, torch.tensor([1.0, 2.0]), cond).shape == (2, 3, 16, 16)
    assert seen == [(2, 6, 16, 16)]  # the noisy high-res image beside the upsampled low-res one


def test_lowres_condition_upsamples_bicubically_and_noises_per_sample():
    x_lr = torch.rand(3, 3, 8, 8) * 2 - 1
    noise = torch.randn(3, 3, 16, 16)
    up = upsample_lowres(x_lr, 16)
    assert up.shape == (3, 3, 16, 16) and up.abs().max() <= 1
    ref = torch.nn.functional.interpolate(x_lr, size=(16, 16), mode="bicubic", align_corners=False).clamp(
        -1, 1
    )
    assert torch.equal(up, ref)
    cond = lowres_condition(x_lr, 16, torch.tensor([0.0, 0.1, 0.3]), noise, True)
    torch.testing.assert_close(
        cond["lowres"], up + torch.tensor([0.0, 0.1, 0.3])[:, None, None, None] * noise
    )
    assert torch.equal(cond["lowres"][0], up[0])  # level 0: the clean upsampled image, whatever the noise
    assert torch.equal(cond["aug_sigma"], torch.tensor([0.0, 0.1, 0.3]))
    assert "aug_sigma" not in lowres_condition(x_lr, 16, torch.zeros(3), noise, False)


def test_training_levels_follow_the_configured_distribution():
    g = torch.Generator().manual_seed(0)
    aug = ConditioningAugment(noise="log-uniform", sigma_min=0.01, sigma_max=0.5, zero_prob=0.25)
    s = sample_aug_sigma(aug, 4000, g)
    zero = s == 0
    assert abs(zero.float().mean() - 0.25) < 0.03
    assert s[~zero].min() >= 0.01 and s[~zero].max() <= 0.5
    assert abs(s[~zero].median() - (0.01 * 0.5) ** 0.5) < 0.01  # ln sigma uniform: median = geometric mean
    uniform = sample_aug_sigma(replace(aug, noise="uniform", zero_prob=0.0), 4000, g)
    assert abs(uniform.mean() - 0.25) < 0.02 and uniform.max() <= 0.5
    assert not sample_aug_sigma(replace(aug, noise="none"), 10, g).any()


def test_blur_augmentation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8) * 2 - 1
    assert torch.equal(random_blur(x, 0.0, (0.4, 0.6), g), x)
    blurred = random_blur(x, 1.0, (0.4, 0.6), g)
    assert blurred.shape == x.shape and (blurred.var(dim=(2, 3)) < x.var(dim=(2, 3))).all()
    flat = torch.full((2, 3, 8, 8), 0.3)
    torch.testing.assert_close(random_blur(flat, 1.0, (0.4, 2.0), g), flat)  # the kernel sums to one


def test_training_lowers_the_loss_and_the_export_loads_back(tmp_path, data):
    cfg = _cfg("upsampler.train.total_nimg=256", "upsampler.train.lr=3e-3", "upsampler.train.precision=fp32",
               "upsampler.augment.blur_prob=0.5")  # fmt: skip
    res = train_stage("upsampler", tmp_path, cfg, data, progress=False)
    first, last = sum(res.losses[:3]) / 3, sum(res.losses[-3:]) / 3
    assert last < 0.8 * first, (first, last)
    loaded, meta = load_model(tmp_path / "upsampler", "upsampler")
    assert meta["low_res"] == 8 and meta["upsample"] == "bicubic" and meta["augment"]["sample_sigma"] == 0.05
    x, sigma = torch.randn(3, 3, 16, 16), torch.tensor([0.1, 1.0, 10.0])
    cond = lowres_condition(
        torch.rand(3, 3, 8, 8) * 2 - 1, 16, torch.tensor([0.0, 0.05, 0.3]), torch.randn_like(x), True
    )
    with torch.no_grad():
        assert torch.equal(res.ema.eval()(x, sigma, cond), loaded(x, sigma, cond))
    with pytest.raises(VcdmError, match="holds a 'upsampler' model, expected a 'image' model"):
        load_model(tmp_path / "upsampler", "image")  # never mistaken for a base decoder


def test_condition_dropout_never_drops_the_lowres_image(data):
    cfg = _cfg()
    batch = {"image": data.as_float(slice(0, 8)), "lowres": resize_images(data.images[:8], 8),
             "label": data.labels[:8]}  # fmt: skip
    seen = []

    def spy(x, sigma, cond):
        seen.append(cond)
        return x

    aug = cfg.upsampler.augment
    for p in (0.0, 0.9):
        UpsamplerTask(cfg.upsampler.diffusion, aug, use_label=True, cond_drop_prob=p).loss(
            spy, batch, torch.Generator().manual_seed(0)
        )
    kept, dropped = seen
    assert "null" not in kept and dropped["null"].any()
    # the same low-res input and level whether or not y / label are dropped
    assert torch.equal(kept["lowres"], dropped["lowres"]) and torch.equal(
        kept["aug_sigma"], dropped["aug_sigma"]
    )
    assert torch.equal(dropped["label"], batch["label"])
    # and the network still reads the low-res image of a dropped sample
    net = build_from_meta({"kind": "upsampler", "diffusion": {}, "net": {"image_size": 16, "in_channels": 3,
                           "extra_in_channels": 3, "base_channels": 8, "channel_mults": [1, 2],
                           "num_classes": 2, "aug_embedding": True}}).net  # fmt: skip
    torch.nn.init.normal_(net.conv_out.weight)
    x, c = torch.randn(8, 3, 16, 16), torch.zeros(8)
    a = net(x, c, dropped)
    b = net(x, c, dropped | {"lowres": dropped["lowres"] + 0.5})
    assert ((a - b).abs().flatten(1).amax(1) > 1e-4).all()


class _ZeroDenoiser(torch.nn.Module):
    def forward(self, x, sigma, cond=None):
        return torch.zeros_like(x)


class _ZeroNet(torch.nn.Module):
    def forward(self, x, c_noise, cond=None):
        return torch.zeros_like(x)


def test_residual_training_loss_is_the_loss_on_the_detail(data):
    """Around the same network, the residual task's loss on x equals the plain task's loss on x - up(x_lr): the
    same draws, the target moved by the bicubic image."""
    from vcdm.diffusion import EDMPrecond, ResidualDenoiser

    cfg = _cfg("upsampler.diffusion.sigma_data=0.1")
    st = cfg.upsampler
    x, lowres = data.as_float(slice(0, 8)), resize_images(data.images[:8], 8)
    base = upsample_lowres(lowres.float() / 127.5 - 1, 16)
    inner = EDMPrecond(_ZeroNet(), sigma_data=0.1)
    res = UpsamplerTask(st.diffusion, st.augment, residual=True).loss(
        ResidualDenoiser(inner), {"image": x, "lowres": lowres}, torch.Generator().manual_seed(3)
    )
    plain = UpsamplerTask(st.diffusion, st.augment).loss(
        inner, {"image": x - base, "lowres": lowres}, torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(res, plain)
    with pytest.raises(
        VcdmError, match="upsampler.residual must be false with upsampler.diffusion.parameterization"
    ):
        _cfg("upsampler.residual=true", "upsampler.diffusion.parameterization=eps")


def test_residual_upsampler_denoises_the_detail_over_bicubic(tmp_path, data):
    from vcdm.diffusion import ResidualDenoiser
    from vcdm.pipeline import Pipeline
    from vcdm.stages.upsampler import residual_std

    cfg = _cfg(
        "upsampler.residual=true", "upsampler.diffusion.sigma_data=0.1", "upsampler.train.total_nimg=128"
    )
    train_stage("upsampler", tmp_path, cfg, data, progress=False)
    loaded, meta = load_model(tmp_path / "upsampler", "upsampler")
    assert isinstance(loaded, ResidualDenoiser) and meta["residual"] is True
    x, x_lr = data.as_float(), resize_images(data.images, 8).float() / 127.5 - 1
    want = float((x - upsample_lowres(x_lr, 16)).std())
    assert meta["residual_std"] == residual_std(data, 8) == pytest.approx(want, abs=1e-4)
    levels, noise = torch.tensor([0.0, 0.2, 0.5]), torch.randn(3, 3, 16, 16)
    cond = lowres_condition(x_lr[:3], 16, levels, noise, True, residual=True)
    torch.testing.assert_close(cond["base"], upsample_lowres(x_lr[:3], 16))  # un-noised: what it adds back
    assert not torch.allclose(cond["base"][1:], cond["lowres"][1:])
    # through the pipeline, at an augmentation level above 0: a residual of zero gives the bicubic image exactly
    pipe = Pipeline.from_run(tmp_path, None, upsampler=True)
    out = pipe.upsample(x_lr[:3], [0, 1, 2], SampleConfig(upsampler_aug_sigma=0.2))
    assert out.shape == (3, 3, 16, 16)
    torch.testing.assert_close(pipe.upsample(x_lr[1:2], [1], SampleConfig(upsampler_aug_sigma=0.2)), out[1:2])
    assert not torch.allclose(out, upsample_lowres(x_lr[:3], 16), atol=1e-3)
    pipe.upsampler.denoiser.inner = _ZeroDenoiser()
    torch.testing.assert_close(
        pipe.upsample(x_lr[:3], [0, 1, 2], SampleConfig(upsampler_aug_sigma=0.2)),
        upsample_lowres(x_lr[:3], 16),
    )
    with pytest.raises(VcdmError, match="upsampler.residual must be false with upsampler.space 'latent'"):
        _cfg("upsampler.residual=true", "upsampler.space=latent")


def test_random_crops_take_the_same_window_of_both_images():
    x_lr = torch.rand(16, 3, 8, 8)
    x_lr[:, 0] = torch.arange(64.0).reshape(8, 8)  # channel 0 holds each pixel's place: 8 * row + column
    x = x_lr.repeat_interleave(2, -1).repeat_interleave(2, -2)  # each low-res pixel a 2 x 2 block
    hi, lo = random_crops(x, x_lr, 8, torch.Generator().manual_seed(0))
    assert hi.shape == (16, 3, 8, 8) and lo.shape == (16, 3, 4, 4)
    torch.testing.assert_close(hi, lo.repeat_interleave(2, -1).repeat_interleave(2, -2))
    corners = lo[:, 0, 0, 0]  # the window's top-left pixel on the low-res grid
    assert len(set(corners.tolist())) > 4 and (corners % 8).max() <= 4 and corners.max() <= 8 * 4 + 4
    again = random_crops(x, x_lr, 8, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], hi) and torch.equal(again[1], lo)  # the draws come from the generator alone
    whole = random_crops(x, x_lr, 16, torch.Generator().manual_seed(0))
    assert torch.equal(whole[0], x) and torch.equal(whole[1], x_lr)


def test_crop_trained_upsampler_sees_crops_and_samples_whole_images(tmp_path, data):
    from vcdm.pipeline import Pipeline

    cfg = _cfg("upsampler.train_crop=8", "upsampler.residual=true", "upsampler.diffusion.sigma_data=0.1")
    cfg = resolve_for_data(cfg, data, tmp_path)
    st = cfg.upsampler
    denoiser = build_from_meta({"kind": "upsampler", "net": json.loads(json.dumps(st.net.__dict__)),
                                "diffusion": {"sigma_data": 0.1}, "residual": True})  # fmt: skip
    seen = []
    denoiser.inner.net.conv_in.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    batch = {"image": data.as_float(slice(0, 4)), "lowres": resize_images(data.images[:4], 8)}
    task = UpsamplerTask(st.diffusion, st.augment, residual=True, crop=8)
    assert task.loss(denoiser, batch, torch.Generator().manual_seed(0)).shape == (4,)
    assert seen == [(4, 6, 8, 8)]  # the noisy crop beside the upsampled low-res crop
    train_stage("upsampler", tmp_path, cfg, data, progress=False)
    _, meta = load_model(tmp_path / "upsampler", "upsampler")
    assert meta["train_crop"] == 8
    x_lr = resize_images(data.images[:2], 8).float() / 127.5 - 1
    out = Pipeline.from_run(tmp_path, None, upsampler=True).upsample(x_lr, [0, 1], SampleConfig())
    assert out.shape == (2, 3, 16, 16)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["upsampler.train_crop=7"], "upsampler.train_crop must be at most the data's size 16 and a multiple of 2 "
         "(the scale 2 and the U-Net's 2 ** (levels - 1) = 2), got 7"),
        (["upsampler.train_crop=6", "upsampler.net.channel_mults=[1,2,2]"], "upsampler.train_crop must be at most "
         "the data's size 16 and a multiple of 4 (the scale 2 and the U-Net's 2 ** (levels - 1) = 4), got 6"),
        (["upsampler.train_crop=32"], "upsampler.train_crop must be at most the data's size 16 and a multiple of 2 "
         "(the scale 2 and the U-Net's 2 ** (levels - 1) = 2), got 32"),
    ],
)  # fmt: skip
def test_wrong_crops_are_one_line_errors_naming_the_field(tmp_path, data, overrides, message):
    with pytest.raises(VcdmError) as e:
        train_stage("upsampler", tmp_path, _cfg(*overrides), data, progress=False)
    assert str(e.value) == message
    with pytest.raises(VcdmError, match=r"^upsampler.train_crop must be null or a positive integer, got 0$"):
        _cfg("upsampler.train_crop=0")
    with pytest.raises(VcdmError, match="upsampler.train_crop must be null with upsampler.space 'latent'"):
        _cfg("upsampler.train_crop=8", "upsampler.space=latent")


@pytest.mark.parametrize(
    "override, message",
    [
        ("upsampler.low_res=6", "upsampler.low_res must divide the data's size 16 (data.image_size), got 6"),
        (
            "upsampler.low_res=32",
            "upsampler.low_res must be below the data's size 16 (data.image_size), got 32",
        ),
        (
            "upsampler.low_res=16",
            "upsampler.low_res must be below the data's size 16 (data.image_size), got 16",
        ),
    ],
)
def test_wrong_sizes_are_one_line_errors_naming_the_field(tmp_path, data, override, message):
    with pytest.raises(VcdmError) as e:
        train_stage("upsampler", tmp_path, _cfg(override), data, progress=False)
    assert str(e.value) == message
    # the other stages still train: an upsampler that does not fit is reported only when it is trained
    train_stage("baseline", tmp_path, _cfg(override, "baseline.train.total_nimg=32"), data, progress=False)
    with pytest.raises(VcdmError, match=r"^decoder.image_size must be at most the data's size 16, got 32$"):
        resolve_for_data(_cfg("decoder.image_size=32"), data, tmp_path)
    with pytest.raises(VcdmError, match=r"^embedder.image_size must be at most the data's size 16, got 32$"):
        resolve_for_data(_cfg("embedder.image_size=32"), data, tmp_path)


def test_base_stages_train_at_their_own_size(tmp_path, data):
    cfg = _cfg("baseline.image_size=8", "baseline.train.total_nimg=32", "embedder.image_size=8",
               "embedder.train.total_nimg=32")  # fmt: skip
    res = train_stage("baseline", tmp_path, cfg, data, progress=False)
    assert json.loads((tmp_path / "baseline" / "model.json").read_text())["net"]["image_size"] == 8
    assert res.ema(torch.randn(1, 3, 8, 8), torch.ones(1), None).shape == (1, 3, 8, 8)
    train_stage("embedder", tmp_path, cfg, data, progress=False)
    from vcdm.stages import compute_embeddings

    es = compute_embeddings(tmp_path, cfg, data, progress=False)  # embeds the 8x8 images
    assert es.emb.shape == (32, 8)
    # the resize is the data's antialiased one, computed once per size
    small = data.images_at(8)
    assert (
        small is data.images_at(8)
        and data.images_at(None) is data.images
        and data.images_at(16) is data.images
    )
    assert torch.equal(small, resize_images(data.images, 8)) and small.shape == (32, 3, 8, 8)


# ---- latent space (upsampler.space 'latent', LDM-SR): the run's autoencoder, f = 2, 2 latent channels ----

AE = ["autoencoder.net.factor=2", "autoencoder.net.base_channels=8", "autoencoder.net.latent_channels=2",
      "autoencoder.train.batch_size=8", "autoencoder.train.total_nimg=32", "autoencoder.disc_start_nimg=16",
      "autoencoder.disc_channels=8"]  # fmt: skip
LATENT = [*AE, "upsampler.space=latent", "upsampler.diffusion.sigma_data=1"]


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory, data):
    run = tmp_path_factory.mktemp("latent-up")
    train_stage("autoencoder", run, _cfg(*AE), data, progress=False)
    train_stage("upsampler", run, _cfg(*LATENT), data, progress=False)  # 8x8 pixels beside 8x8 latents
    return run


def test_latent_upsampler_reads_the_lowres_pixels_on_the_latent_grid(tmp_path, data):
    net = resolve_for_data(_cfg(*LATENT), data, tmp_path).upsampler.net
    assert (net.image_size, net.in_channels, net.extra_in_channels) == (8, 2, 3)  # latents 2x8x8, x_lr 3x8x8
    x_lr = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(upsample_lowres(x_lr, 8), x_lr)  # low_res = H / f: no resize (LDM-SR)
    small = upsample_lowres(x_lr, 4)  # bicubic to a smaller grid: antialiased
    ref = torch.nn.functional.interpolate(x_lr, size=(4, 4), mode="bicubic", antialias=True).clamp(-1, 1)
    assert torch.equal(small, ref)
    # a latent grid r times below low_res (f = 4: 16 / 4 = 4, low_res 8, r = 2): every pixel, as r^2 channels
    net = resolve_for_data(_cfg(*LATENT, "autoencoder.net.factor=4"), data, tmp_path).upsampler.net
    assert (net.image_size, net.in_channels, net.extra_in_channels) == (4, 2, 12)
    packed = upsample_lowres(x_lr, 4, UNSHUFFLE)
    assert packed.shape == (2, 12, 4, 4) and torch.equal(torch.nn.functional.pixel_shuffle(packed, 2), x_lr)
    with pytest.raises(VcdmError, match="upsampler.space must be one of"):
        _cfg("upsampler.space=voxel")


def test_latent_upsampler_samples_images_of_the_datas_shape(latent_run, data):
    from vcdm.pipeline import Pipeline

    meta = json.loads((latent_run / "upsampler" / "model.json").read_text())
    assert meta["space"] == "latent" and meta["latent"]["image_shape"] == [3, 16, 16]
    pipe = Pipeline.from_run(latent_run, None, upsampler=True)
    assert pipe.upsampler.shape == (2, 8, 8) and pipe.output_shape == (3, 16, 16)
    x_lr = resize_images(data.images[:3], 8).float() / 127.5 - 1
    out = pipe.upsample(x_lr, [0, 1, 2])
    assert out.shape == (3, 3, 16, 16) and out.abs().max() <= 1
    torch.testing.assert_close(pipe.upsample(x_lr[1:2], [1]), out[1:2])  # a result depends on its seed only
    # the low-res image reaches the network: another one under the same seed gives another result
    assert not torch.allclose(pipe.upsample(x_lr[2:3], [0]), out[:1])
    with pytest.raises(VcdmError, match=r"images: expected \(N, 3, 8, 8\)"):
        pipe.upsample(torch.zeros(1, 2, 8, 8), [0])


def test_latent_upsampler_on_a_grid_below_low_res_reads_every_lowres_pixel(tmp_path, data):
    from vcdm.pipeline import Pipeline

    ae = [*AE, "autoencoder.net.factor=4"]
    train_stage("autoencoder", tmp_path, _cfg(*ae), data, progress=False)
    train_stage("upsampler", tmp_path, _cfg(*LATENT, *ae), data, progress=False)  # 8x8 pixels, 4x4 latents
    meta = json.loads((tmp_path / "upsampler" / "model.json").read_text())
    assert meta["upsample"] == UNSHUFFLE and meta["net"]["extra_in_channels"] == 12
    pipe = Pipeline.from_run(tmp_path, None, upsampler=True)
    x_lr = resize_images(data.images[:2], 8).float() / 127.5 - 1
    out = pipe.upsample(x_lr, [0, 1])
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(pipe.upsample(x_lr[1:], [1]), out[1:])  # a result depends on its seed only
    # a change to one pixel of x_lr, which a resize to the 4x4 grid would blur away, changes the result
    nudged = x_lr[:1].clone()
    nudged[..., 0, 0] = -nudged[..., 0, 0]
    assert not torch.allclose(pipe.upsample(nudged, [0]), out[:1])


def test_latent_upsampler_without_its_autoencoder_is_one_line(latent_run, data, tmp_path):
    from vcdm.pipeline import Pipeline

    with pytest.raises(VcdmError, match="no autoencoder export; train one with `vcdm train autoencoder"):
        train_stage("upsampler", tmp_path, _cfg(*LATENT), data, progress=False)
    meta_path = latent_run / "autoencoder" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"scale_factor": meta["scale_factor"] * 2}))  # as if retrained
    try:
        with pytest.raises(VcdmError, match="not the autoencoder this upsampler was trained on"):
            Pipeline.from_run(latent_run, None, upsampler=True)
    finally:
        meta_path.write_text(json.dumps(meta))
