"""The guidance glue of `vcdm train noisy-classifier` and `vcdm sample` (vcdm.cli.sample)."""

import argparse

import pytest
import torch
from PIL import Image

from vcdm.cli import main
from vcdm.cli.sample import (
    add_guidance_args,
    guidance_wrappers,
    load_target_image,
    uses_label_for_guidance_only,
)
from vcdm.config import preset
from vcdm.data import load_dataset
from vcdm.errors import VcdmError
from vcdm.pipeline import Pipeline, sample_stage
from vcdm.runs import save_config
from vcdm.stages import load_embedder, train_stage


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = preset("tiny")
    save_config(run, cfg)
    data = load_dataset(cfg.data)
    train_stage("embedder", run, cfg, data, progress=False)
    train_stage("baseline", run, cfg, data, progress=False)
    assert main(["train", "noisy-classifier", str(run), "--no-progress"]) == 0
    assert (run / "noisy_classifier" / "model.safetensors").is_file()
    return run


def _args(run, *flags):
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--label", type=int)
    add_guidance_args(p)
    return p.parse_args([str(run), *flags])


def _denoiser(x, sigma, cond):
    return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2) * 3  # saturates: values beyond [-1, 1]


def test_defaults_give_the_identity(run):
    args = _args(run)
    assert args.classifier_scale == 0 and args.clip_scale == 0 and args.threshold == "none"
    assert guidance_wrappers(args)(_denoiser) is _denoiser


def test_finished_noisy_classifier_needs_force(run, capsys):
    assert main(["train", "noisy-classifier", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a noisy-classifier model trained for 256 images; pass --force" in err
    assert "--set eval.classifier_train.total_nimg=N" in err


def test_classifier_guidance_flags(run, tmp_path):
    with pytest.raises(VcdmError, match="needs --label"):
        guidance_wrappers(_args(run, "--classifier-scale", "2"))
    with pytest.raises(VcdmError, match=r"--label must be in \[0, 9\]"):
        guidance_wrappers(_args(run, "--classifier-scale", "2", "--label", "10"))
    with pytest.raises(VcdmError, match="vcdm train noisy-classifier"):
        guidance_wrappers(_args(tmp_path, "--classifier-scale", "2", "--label", "3"))
    wrap = guidance_wrappers(_args(run, "--classifier-scale", "2", "--label", "3"))
    x, sigma = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.full((2,), 1.0)
    with torch.no_grad():
        shift = wrap(_denoiser)(x, sigma, None) - _denoiser(x, sigma, None)
    assert shift.abs().max() > 0  # the classifier's gradient moved x0_hat
    assert uses_label_for_guidance_only(_args(run, "--classifier-scale", "2", "--label", "3"), False)
    assert not uses_label_for_guidance_only(_args(run, "--classifier-scale", "2", "--label", "3"), True)
    assert not uses_label_for_guidance_only(_args(run, "--label", "3"), False)


def test_clip_guidance_flags(run, tmp_path):
    with pytest.raises(VcdmError, match="exactly one"):
        guidance_wrappers(_args(run, "--clip-scale", "1"))
    with pytest.raises(VcdmError, match="need --clip-scale"):
        guidance_wrappers(_args(run, "--clip-target-text", "a seven"))
    with pytest.raises(VcdmError, match="no text encoder"):
        guidance_wrappers(_args(run, "--clip-scale", "1", "--clip-target-text", "a seven"))
    with pytest.raises(VcdmError, match="cannot read"):
        guidance_wrappers(_args(run, "--clip-scale", "1", "--clip-target-image", str(tmp_path / "none.png")))
    target = tmp_path / "target.png"
    Image.new("RGB", (40, 40), (255, 255, 255)).save(target)  # any size and mode: fitted to the embedder
    embedder = load_embedder(run, preset("tiny"))
    img = load_target_image(target, embedder)
    assert img.shape == (1, 1, 28, 28) and torch.allclose(img, torch.ones_like(img))
    wrap = guidance_wrappers(_args(run, "--clip-scale", "5", "--clip-target-image", str(target)))
    x, sigma = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.full((2,), 1.0)
    with torch.no_grad():
        guided = wrap(_denoiser)(x, sigma, None)
    assert not torch.allclose(guided, _denoiser(x, sigma, None))


def test_threshold_flags(run):
    with pytest.raises(VcdmError, match="only to --threshold dynamic"):
        guidance_wrappers(_args(run, "--threshold-percentile", "0.9"))
    with pytest.raises(VcdmError, match=r"in \(0, 1\]"):
        guidance_wrappers(_args(run, "--threshold", "dynamic", "--threshold-percentile", "1.5"))
    x, sigma = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(2)), torch.full((2,), 0.1)
    assert _denoiser(x, sigma, None).abs().max() > 1
    for kind in ("static", "dynamic"):
        out = guidance_wrappers(_args(run, "--threshold", kind))(_denoiser)(x, sigma, None)
        assert out.abs().max() <= 1


def test_all_guidances_together_sample_the_baseline(run):
    pipe = Pipeline.from_run(run, "baseline")
    wrap = guidance_wrappers(_args(run, "--classifier-scale", "1", "--label", "7", "--threshold", "dynamic"))
    images = sample_stage(wrap(pipe.decoder), pipe.decoder_diffusion, pipe.image_shape, [0, 1], None,
                          sampler="heun", num_steps=3)  # fmt: skip
    assert images.shape == (2, 1, 28, 28) and torch.isfinite(images).all()
    assert images.abs().max() <= 1
