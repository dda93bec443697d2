"""The classifier stage kinds: the noisy classifier trains, exports and loads through the generic path."""

import json

import pytest
import torch

from vcdm.config import apply_overrides, preset
from vcdm.data import load_dataset
from vcdm.errors import VcdmError
from vcdm.networks.classifier import classifier_input
from vcdm.runs import stage_done
from vcdm.stages import load_noisy_classifier, train_stage


def test_train_export_and_load_noisy_classifier(tmp_path):
    cfg = preset("tiny")
    data = load_dataset(cfg.data)
    state = torch.random.get_rng_state()
    res = train_stage("noisy-classifier", tmp_path, cfg, data, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    out = tmp_path / "noisy_classifier"
    meta = json.loads((out / "model.json").read_text())
    assert (
        meta["kind"] == "noisy-classifier"
        and meta["nimg"] == res.nimg == cfg.eval.classifier_train.total_nimg
    )
    assert meta["noise"] == {"p_mean": -1.2, "p_std": 1.2, "sigma_data": 0.5}
    assert stage_done(out, cfg.eval.classifier_train.total_nimg)
    model, sigma_data = load_noisy_classifier(out)
    assert model.cfg.noise_conditioned and model.cfg.num_classes == 10 and not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert sigma_data == 0.5 and load_noisy_classifier(tmp_path)[1] == 0.5  # the run directory works too
    x = data.as_float(slice(0, 4))
    with torch.no_grad():
        assert torch.equal(
            model(*classifier_input(x, torch.ones(4))), res.ema.eval()(*classifier_input(x, torch.ones(4)))
        )
    with pytest.raises(VcdmError, match="vcdm train noisy-classifier"):
        load_noisy_classifier(tmp_path / "missing")


def test_noisy_classifier_trains_at_the_decoders_size(tmp_path):
    # a cascade's base decoder samples below the data's size: the classifier that guides it must read that size
    cfg = apply_overrides(preset("tiny"), ["decoder.image_size=16", "eval.classifier_train.total_nimg=64"])
    train_stage("noisy-classifier", tmp_path, cfg, load_dataset(cfg.data), progress=False)
    model, _ = load_noisy_classifier(tmp_path)
    assert model.cfg.image_size == 16
    with torch.no_grad():
        assert model(*classifier_input(torch.zeros(2, 1, 16, 16), torch.ones(2))).shape == (2, 10)
