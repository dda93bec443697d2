"""The stage registry: any kind trains, exports and loads through the one generic path (a toy kind too);
export -> load gives the same outputs; the DDPM parameterisation trains and samples."""

import pytest
import torch

from vcdm.config import SampleConfig, apply_overrides, preset
from vcdm.data import load_mnist
from vcdm.errors import VcdmError
from vcdm.pipeline import Pipeline
from vcdm.stages import KINDS, Prepared, StageKind, load_model, register, train_stage
from vcdm.training.checkpoint import save_export


@pytest.fixture(scope="module")
def data():
    return load_mnist("train", limit=128)


def test_export_load_gives_the_same_outputs(tmp_path, data):
    cfg = apply_overrides(preset("tiny"), ["baseline.train.total_nimg=64"])
    res = train_stage("baseline", tmp_path, cfg, data, progress=False)
    loaded, meta = load_model(tmp_path / "baseline", "image")
    x, sigma = torch.randn(3, 1, 28, 28), torch.tensor([0.1, 1.0, 10.0])
    with torch.no_grad():
        assert torch.equal(res.ema.eval()(x, sigma, None), loaded(x, sigma, None))
    assert meta["condition"] == "none" and meta["nimg"] == 64


def test_export_into_wrong_architecture_is_refused(tmp_path, data):
    cfg = apply_overrides(preset("tiny"), ["baseline.train.total_nimg=32"])
    res = train_stage("baseline", tmp_path, cfg, data, progress=False)
    import json

    meta = json.loads((tmp_path / "baseline" / "model.json").read_text())
    meta["net"]["base_channels"] = 16
    save_export(tmp_path / "other", res.ema, meta)
    with pytest.raises(VcdmError, match=r"other/model.safetensors: weights do not fit this architecture"):
        load_model(tmp_path / "other", "baseline")
    with pytest.raises(VcdmError, match="holds a 'baseline' model, expected a 'prior' model"):
        load_model(tmp_path / "baseline", "prior")


def test_ddpm_epsilon_parameterisation_trains_and_samples(tmp_path, data):
    cfg = apply_overrides(preset("tiny"), ["baseline.diffusion.parameterization=eps",
                                           "baseline.diffusion.beta_schedule=cosine",
                                           "baseline.train.total_nimg=64"])  # fmt: skip
    res = train_stage("baseline", tmp_path, cfg, data, progress=False)
    assert all(torch.isfinite(torch.tensor(res.losses)))
    pipe = Pipeline.from_run(tmp_path, "baseline")
    out = pipe([0, 1], SampleConfig(sampler="ddpm", num_steps=5))
    assert out.images.shape == (2, 1, 28, 28) and out.embeddings is None
    assert out.images.abs().max() <= 1


class _Toy(torch.nn.Module):
    """A linear autoencoder of flattened images: the smallest thing worth training."""

    def __init__(self, pixels: int, width: int):
        super().__init__()
        self.enc, self.dec = torch.nn.Linear(pixels, width), torch.nn.Linear(width, pixels)

    def forward(self, x):
        return self.dec(self.enc(x.flatten(1))).view_as(x)


class _ToyTask:
    def loss(self, model, batch, generator):
        x = batch["image"]
        return (model(x) - x).square().flatten(1).mean(1)


def test_a_toy_kind_registers_in_a_few_lines_and_trains_exports_and_loads(tmp_path, data):
    def prepare(cfg, data, run):
        _, c, h, w = data.images.shape
        return Prepared({"net": {"pixels": c * h * w, "width": 8}}, {"image": data.images}, _ToyTask())

    register(StageKind(name="toy", summary="a linear autoencoder", train_path="embedder.train", prepare=prepare,
                       build=lambda meta: _Toy(**meta["net"]), init_stream=0x70))  # fmt: skip
    try:
        cfg = apply_overrides(preset("tiny"), ["embedder.train.total_nimg=64"])
        res = train_stage("toy", tmp_path, cfg, data, progress=False)
        assert res.nimg == 64 and res.losses[-1] < res.losses[0]
        model, meta = load_model(tmp_path / "toy", "toy")
        assert meta["kind"] == "toy" and meta["nimg"] == 64 and (tmp_path / "toy" / "checkpoints").is_dir()
        x = data.as_float(slice(0, 3))
        with torch.no_grad():
            assert torch.equal(model(x), res.ema.eval()(x))
        assert (tmp_path / "config.json").is_file()  # the resolved config is written beside it
        again = train_stage("toy", tmp_path / "again", cfg, data, progress=False)  # same seed: same weights
        assert all(
            torch.equal(a, b) for a, b in zip(again.ema.state_dict().values(), res.ema.state_dict().values())
        )
    finally:
        KINDS.pop("toy")


def test_the_cli_trains_every_registered_kind_through_one_path(tmp_path, capsys):
    from vcdm.cli import build_parser

    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "stage")  # fmt: skip
    assert tuple(train.choices) == tuple(KINDS)
