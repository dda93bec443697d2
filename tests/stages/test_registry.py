"""Stages without the CLI: export -> load gives the same outputs; the DDPM parameterisation trains and samples."""

import pytest
import torch

from vcdm.config import SampleConfig, apply_overrides, preset
from vcdm.data import load_mnist
from vcdm.errors import VcdmError
from vcdm.pipeline import Pipeline
from vcdm.stages import load_model, train_decoder
from vcdm.training.checkpoint import save_export


@pytest.fixture(scope="module")
def data():
    return load_mnist("train", limit=128)


def test_export_load_gives_the_same_outputs(tmp_path, data):
    cfg = apply_overrides(preset("tiny"), ["baseline.train.total_nimg=64"])
    res = train_decoder(tmp_path, cfg, data, stage="baseline", progress=False)
    loaded, meta = load_model(tmp_path / "baseline", "decoder")
    x, sigma = torch.randn(3, 1, 28, 28), torch.tensor([0.1, 1.0, 10.0])
    with torch.no_grad():
        assert torch.equal(res.ema.eval()(x, sigma, None), loaded(x, sigma, None))
    assert meta["condition"] == "none" and meta["nimg"] == 64


def test_export_into_wrong_architecture_is_refused(tmp_path, data):
    cfg = apply_overrides(preset("tiny"), ["baseline.train.total_nimg=32"])
    res = train_decoder(tmp_path, cfg, data, stage="baseline", progress=False)
    import json

    meta = json.loads((tmp_path / "baseline" / "model.json").read_text())
    meta["net"]["base_channels"] = 16
    save_export(tmp_path / "other", res.ema, meta)
    with pytest.raises(VcdmError, match=r"other/model.safetensors: weights do not fit this architecture"):
        load_model(tmp_path / "other", "decoder")
    with pytest.raises(VcdmError, match="holds a 'decoder' model, expected a 'prior' model"):
        load_model(tmp_path / "baseline", "prior")


def test_ddpm_epsilon_parameterisation_trains_and_samples(tmp_path, data):
    cfg = apply_overrides(preset("tiny"), ["baseline.diffusion.parameterization=eps",
                                           "baseline.diffusion.beta_schedule=cosine",
                                           "baseline.train.total_nimg=64"])  # fmt: skip
    res = train_decoder(tmp_path, cfg, data, stage="baseline", progress=False)
    assert all(torch.isfinite(torch.tensor(res.losses)))
    pipe = Pipeline.from_run(tmp_path, "baseline")
    out = pipe([0, 1], SampleConfig(sampler="ddpm", num_steps=5))
    assert out.images.shape == (2, 1, 28, 28) and out.embeddings is None
    assert out.images.abs().max() <= 1
