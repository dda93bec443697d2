"""The Pipeline as a cascade: prior -> decoder at 32x32 -> upsampler to 64x64, built in memory from untrained
tiny networks (weights perturbed so that every input matters)."""

import pytest
import torch
from fake_nets import seeded_net

from vcdm.config import SampleConfig
from vcdm.embedders import EmbeddingStats
from vcdm.errors import VcdmError
from vcdm.pipeline import Pipeline, decoder_component, prior_component, upsampler_component
from vcdm.stages import build_from_meta
from vcdm.stages.upsampler import upsample_lowres

D = 4
UNET = {"base_channels": 8, "channel_mults": [1, 2], "in_channels": 3}
EDM = {"sigma_min": 0.002, "sigma_max": 80.0}
AUGMENT = {"noise": "log-uniform", "sigma_min": 0.005, "sigma_max": 0.5, "zero_prob": 0.1, "sample_sigma": 0.05,
           "blur_prob": 0.0, "blur_sigma": [0.4, 0.6]}  # fmt: skip
CFG = SampleConfig(num_steps=2, prior_num_steps=2, upsampler_num_steps=2, batch_size=8)


def _model(meta, seed):
    return seeded_net(lambda: build_from_meta(meta), seed, scale=0.01, noise_seed=seed + 100)


def _pipeline(upsampler_condition="none", aug_embedding=True):
    prior_meta = {"kind": "prior", "net": {"emb_dim": D, "width": 16, "depth": 1, "heads": 2, "num_classes": 0},
                  "diffusion": {"sigma_data": 1.0, **EDM}, "precond": "x0"}  # fmt: skip
    dec_meta = {"kind": "decoder", "net": {**UNET, "image_size": 32, "emb_dim": D, "num_classes": 0},
                "diffusion": EDM, "condition": "embedding"}  # fmt: skip
    up_net = {**UNET, "image_size": 64, "extra_in_channels": 3, "aug_embedding": aug_embedding,
              "emb_dim": D if "embedding" in upsampler_condition else 0, "num_classes": 0}  # fmt: skip
    up_meta = {"kind": "upsampler", "net": up_net, "diffusion": EDM, "condition": upsampler_condition,
               "low_res": 32, "upsample": "bicubic", "augment": AUGMENT}  # fmt: skip
    stats = EmbeddingStats(torch.zeros(D), torch.ones(D))
    components = [prior_component(_model(prior_meta, 1), prior_meta), decoder_component(_model(dec_meta, 2), dec_meta),
                  upsampler_component(_model(up_meta, 3), up_meta)]  # fmt: skip
    return Pipeline(components, stats)


@pytest.fixture(scope="module")
def pipe():
    return _pipeline()


@pytest.fixture(scope="module")
def out(pipe):
    return pipe([3, 4, 5, 6], CFG)


def test_a_cascade_samples_64x64_and_keeps_its_base_images(pipe, out):
    assert out.images.shape == (4, 3, 64, 64) and out.low_res.shape == (4, 3, 32, 32)
    assert out.embeddings.shape == (4, D) and out.images.abs().max() <= 1 and out.low_res.abs().max() <= 1
    assert pipe.output_shape == (3, 64, 64) and pipe.image_shape == (3, 32, 32)


def test_every_image_depends_only_on_its_seed(pipe, out):
    # the same noise and computation; only float rounding differs (kernels block batches differently), far
    # below one 8-bit grey level (0.0078)
    alone = pipe([5], replace_cfg(batch_size=1))
    assert (alone.images[0] - out.images[2]).abs().max() < 2e-3
    assert (alone.low_res[0] - out.low_res[2]).abs().max() < 2e-3
    other = pipe([5, 9, 3], replace_cfg(batch_size=2))  # another batch, another position
    assert (other.images[0] - out.images[2]).abs().max() < 2e-3
    assert (other.images[2] - out.images[0]).abs().max() < 2e-3
    assert not torch.allclose(out.images[0], out.images[1])


def test_upsample_given_images_is_the_cascade_s_upsampler(pipe, out):
    again = pipe.upsample(out.low_res, [3, 4, 5, 6], CFG)
    torch.testing.assert_close(again, out.images, atol=1e-5, rtol=0)
    other = pipe.upsample(out.low_res.flip(0), [3, 4, 5, 6], CFG)  # the images, not only the seeds, matter
    assert ((other - out.images).abs().flatten(1).amax(1) > 1e-3).all()
    with pytest.raises(VcdmError, match=r"images: expected \(N, 3, 32, 32\) \(upsampler.low_res\)"):
        pipe.upsample(torch.zeros(1, 3, 16, 16), [0], CFG)


def test_the_augmentation_level_and_its_noise(pipe, out):
    comp = pipe.upsampler
    x_lr = out.low_res[:2]

    def cond(seeds, sigma):
        return comp.condition({"decoder": x_lr}, None, seeds, replace_cfg(upsampler_aug_sigma=sigma), "cpu")

    clean = upsample_lowres(x_lr, 64)
    # level 0: the upsampled base image itself, whatever the seed
    assert torch.equal(cond([0, 1], 0.0)["lowres"], clean) and torch.equal(cond([7, 8], 0.0)["lowres"], clean)
    assert torch.equal(cond([0, 1], 0.0)["aug_sigma"], torch.zeros(2))
    # a level: noise of that std from the seed's own stream (the same seed, the same noise)
    a, b = cond([0, 1], 0.2)["lowres"] - clean, cond([1, 0], 0.2)["lowres"] - clean
    torch.testing.assert_close(a[0], b[1])
    assert not torch.allclose(a[0], b[0])
    assert abs(float(a.std()) - 0.2) < 0.01
    assert torch.equal(cond([0, 1], None)["aug_sigma"], torch.full((2,), 0.05))  # the export's default
    # and the level changes the images
    higher = pipe([3, 4], replace_cfg(upsampler_aug_sigma=0.4))
    assert (higher.images - out.images[:2]).abs().max() > 1e-3
    torch.testing.assert_close(higher.low_res, out.low_res[:2], atol=1e-5, rtol=0)


def test_upsampler_without_augmentation_takes_level_zero_only():
    pipe = _pipeline(aug_embedding=False)
    assert pipe([0], CFG).images.shape == (1, 3, 64, 64)  # the default level is 0 when it has no level input
    with pytest.raises(
        VcdmError, match="sample.upsampler_aug_sigma must be 0 for an upsampler trained without"
    ):
        pipe([0], replace_cfg(upsampler_aug_sigma=0.1))


def test_an_embedding_conditioned_upsampler_reads_y_and_guidance_weights_it(pipe):
    cascade = _pipeline("embedding")
    base = cascade([0, 1], CFG)
    y = cascade.stats.normalize(base.embeddings)
    same = cascade.upsample(base.low_res, [0, 1], CFG, embeddings=base.embeddings)
    torch.testing.assert_close(same, base.images, atol=1e-5, rtol=0)
    other = cascade.upsample(base.low_res, [0, 1], CFG, embeddings=cascade.stats.denormalize(y.flip(0)))
    assert (other - base.images).abs().max() > 1e-4
    guided = replace_cfg(upsampler_guidance=3.0)
    assert (
        cascade.upsample(base.low_res, [0, 1], guided, embeddings=base.embeddings) - base.images
    ).abs().max() > 1e-4
    with pytest.raises(VcdmError, match="needs embeddings"):
        cascade.upsample(base.low_res, [0, 1], CFG)  # no embedder loaded
    with pytest.raises(
        VcdmError, match="sample.upsampler_guidance must be 1: this upsampler has no y or label"
    ):
        pipe([0], guided)  # an upsampler conditioned on nothing but its low-res image: nothing to guide


def replace_cfg(**changes):
    from dataclasses import replace

    return replace(CFG, **changes)
