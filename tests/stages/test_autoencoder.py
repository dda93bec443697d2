"""The autoencoder stage: training through the registry, the export's scale factor (measured once, saved,
reused), the discriminator's gradients, and `vcdm train autoencoder` / `vcdm autoencode`."""

import json

import pytest
import torch
from fake_data import blobs

from vcdm.cli import main
from vcdm.config import apply_overrides, preset, to_dict
from vcdm.data import ImageData
from vcdm.errors import VcdmError
from vcdm.latent import AutoencoderStage, measure_scale
from vcdm.networks.autoencoder import AutoencoderConfig
from vcdm.stages import autoencoder as stage
from vcdm.stages import load_model, train_stage
from vcdm.stages.autoencoder import AutoencoderModel, AutoencoderTask, load_latent_space

SMALL = ["autoencoder.net.base_channels=8", "autoencoder.net.latent_channels=2", "autoencoder.train.batch_size=8",
         "autoencoder.train.total_nimg=32", "autoencoder.disc_start_nimg=16", "autoencoder.disc_channels=8"]  # fmt: skip


def _blobs(n: int = 24, size: int = 16) -> ImageData:
    return blobs(n, size, radius2=12)  # discs of one size


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("ae")
    data = _blobs()
    cfg = apply_overrides(preset("tiny"), SMALL)
    res = train_stage("autoencoder", run, cfg, data, progress=False)
    return run, data, cfg, res


def test_training_exports_the_autoencoder_with_its_measured_scale_factor(trained):
    run, data, cfg, res = trained
    meta = json.loads((run / "autoencoder" / "model.json").read_text())
    assert meta["kind"] == "autoencoder" and meta["nimg"] == 32
    assert meta["net"]["image_size"] == 16 and meta["net"]["in_channels"] == 3  # from the data
    model, _ = load_model(run / "autoencoder", "autoencoder")
    s = measure_scale(model.autoencoder, data.images)
    assert meta["scale_factor"] == pytest.approx(s, rel=1e-5)
    space, _ = load_latent_space(run)
    z = space.encode(data.images)
    assert z.shape == (24, 2, 4, 4)
    assert float(z.std()) == pytest.approx(1.0, rel=1e-4)  # unit variance on the training set
    assert int(model.seen) == 32  # the discriminator's clock was checkpointed with the weights
    assert space.decode(z).shape == (24, 3, 16, 16) and space.decode(z).abs().max() <= 1


def test_the_scale_factor_is_measured_once_and_reused(trained, monkeypatch):
    run, data, *_ = trained
    saved = json.loads((run / "autoencoder" / "model.json").read_text())["scale_factor"]

    def fail(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(stage, "measure_scale", fail)
    space, _ = load_latent_space(run)
    assert space.scale_factor == saved
    torch.testing.assert_close(
        space.encode(data.images[:4]), space.autoencoder.encode(data.as_float(slice(0, 4)))[0] * saved
    )


def test_the_discriminator_learns_only_from_its_hinge_loss_and_switches_on_after_disc_start():
    torch.manual_seed(0)
    net = AutoencoderConfig(base_channels=8, latent_channels=2, image_size=16, in_channels=3)
    st = AutoencoderStage(net=net, disc_start_nimg=4, disc_channels=8)
    model = AutoencoderModel(net, 8, 2)
    task = AutoencoderTask(st)
    x = _blobs(4).as_float()
    task.loss(model, {"image": x}, torch.Generator().manual_seed(0)).sum().backward()
    assert all(p.grad is None for p in model.discriminator.parameters())  # not yet on
    assert int(model.seen) == 4
    model.zero_grad()
    loss = task.loss(model, {"image": x}, torch.Generator().manual_seed(0))
    loss.sum().backward()
    got = [p.grad.clone() for p in model.discriminator.parameters()]
    # the same gradient as the hinge loss alone on (x, x_rec detached)
    model.zero_grad()
    mu, logvar = model.autoencoder.encode(x)
    x_rec = model.autoencoder.decode(stage.sample_posterior(mu, logvar, torch.Generator().manual_seed(0)))
    stage.hinge_d_loss(model.discriminator(x), model.discriminator(x_rec.detach())).sum().backward()
    for a, p in zip(got, model.discriminator.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(VcdmError, match="autoencoder.reconstruction"):
        apply_overrides(preset("tiny"), ["autoencoder.reconstruction=l3"])
    with pytest.raises(VcdmError, match="autoencoder.kl_weight"):
        apply_overrides(preset("tiny"), ["autoencoder.kl_weight=-1"])
    cfg = apply_overrides(preset("tiny"), [*SMALL, "autoencoder.net.factor=8"])
    with pytest.raises(VcdmError, match="autoencoder.net.factor must divide"):
        train_stage("autoencoder", tmp_path, cfg, _blobs(size=20), progress=False)
    assert "autoencoder" in to_dict(preset("mnist"))


def test_cli_trains_the_autoencoder_and_reconstructs(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "blobs.npz", images=_blobs().images.permute(0, 2, 3, 1).numpy())
    run = tmp_path / "run"
    args = [str(run), "--preset", "tiny", "--no-progress", f"--set=data.source={tmp_path / 'blobs.npz'}",
            *(f"--set={s}" for s in SMALL)]  # fmt: skip
    assert main(["train", "autoencoder", *args]) == 0
    assert main(["autoencode", str(run), "--num", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "(2, 4, 4)" in out
    assert len(list((run / "edits" / "autoencode").glob("*.png"))) == 5  # 4 reconstructions + grid
    assert main(["autoencode", str(run), "--num", "4"]) == 2  # the output exists: --force
