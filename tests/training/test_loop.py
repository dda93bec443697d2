import pytest
import torch
from torch import nn

from vcdm.diffusion import EDMPrecond, edm_loss
from vcdm.errors import VcdmError
from vcdm.training import TrainConfig, TrainingInterrupted, train
from vcdm.training.checkpoint import list_training_states, load_training_state
from vcdm.training.loop import batch_indices, learning_rate


class Mlp(nn.Module):
    def __init__(self, dim=4, width=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Dropout(0.1), nn.Linear(width, dim))

    def forward(self, x, c_noise, cond=None):
        return self.net(torch.cat([x, c_noise[:, None]], 1))


class EDMTask:
    def loss(self, model, batch, generator):
        return edm_loss(model, batch["x"], None, generator, sigma_data=1.0)


def _data(n=256):
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(n, 4, generator=g) * 0.5 + 1.0}


def _model():
    torch.manual_seed(0)
    return EDMPrecond(Mlp(), sigma_data=1.0)


CFG = TrainConfig(batch_size=32, total_nimg=640, lr=1e-2, warmup_nimg=64, checkpoint_every_nimg=320,
                  ema_halflife_nimg=100, precision="fp32", log_every_nimg=160)  # fmt: skip


def test_loss_decreases_and_log_is_written(tmp_path):
    res = train(_model(), EDMTask(), _data(), CFG, tmp_path, progress=False)
    assert res.nimg == 640 and len(res.losses) == 20
    assert sum(res.losses[-5:]) < sum(res.losses[:5])
    assert (tmp_path / "log.jsonl").read_text().count("\n") == 4
    assert len(list_training_states(tmp_path)) == 2


def test_resume_is_bit_identical(tmp_path):
    full = train(_model(), EDMTask(), _data(), CFG, tmp_path / "a", progress=False)
    half_cfg = TrainConfig(**{**CFG.__dict__, "total_nimg": 320})
    train(_model(), EDMTask(), _data(), half_cfg, tmp_path / "b", progress=False)
    resumed = train(_model(), EDMTask(), _data(), CFG, tmp_path / "b", progress=False)
    assert resumed.losses == full.losses
    for (k, a), b in zip(full.ema.state_dict().items(), resumed.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_bf16_autocast_trains(tmp_path):
    cfg = TrainConfig(**{**CFG.__dict__, "precision": "bf16", "total_nimg": 160})
    res = train(_model(), EDMTask(), _data(), cfg, tmp_path, progress=False)
    assert all(torch.isfinite(torch.tensor(res.losses)))


def test_micro_batches_match_one_big_batch(tmp_path):
    """Gradient accumulation over 2 micro-batches = the same run at any micro-batch layout up to float error."""
    cfg2 = TrainConfig(**{**CFG.__dict__, "micro_batches": 2, "total_nimg": 96})
    a = train(_model(), EDMTask(), _data(), cfg2, tmp_path / "a", progress=False)
    b = train(_model(), EDMTask(), _data(), cfg2, tmp_path / "b", progress=False)
    assert a.losses == b.losses


def test_meta_mismatch_refuses_resume(tmp_path):
    train(_model(), EDMTask(), _data(), TrainConfig(**{**CFG.__dict__, "total_nimg": 64}), tmp_path,
          meta={"width": 32}, progress=False)  # fmt: skip
    with pytest.raises(VcdmError, match="different model"):
        train(_model(), EDMTask(), _data(), CFG, tmp_path, meta={"width": 64}, progress=False)


def test_nan_loss_stops_with_message(tmp_path):
    class NanTask:
        def loss(self, model, batch, generator):
            return model(batch["x"], torch.ones(len(batch["x"])), None).sum(1) * float("nan")

    with pytest.raises(VcdmError, match="loss became nan"):
        train(_model(), NanTask(), _data(), CFG, tmp_path, progress=False)


def test_sigterm_writes_checkpoint_then_raises(tmp_path):
    import os
    import signal

    class KillAfter:
        def __init__(self):
            self.n = 0

        def loss(self, model, batch, generator):
            self.n += 1
            if self.n == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return EDMTask().loss(model, batch, generator)

    with pytest.raises(TrainingInterrupted) as e:
        train(_model(), KillAfter(), _data(), CFG, tmp_path, progress=False)
    st = load_training_state(e.value.checkpoint)
    assert st["counters"]["nimg"] == 96


def test_batch_indices_cover_each_epoch_once():
    idx = torch.cat([batch_indices(10, n, 4, seed=3) for n in range(0, 20, 4)])
    assert sorted(idx[:10].tolist()) == list(range(10)) and sorted(idx[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(10, 8, 4, 3), batch_indices(10, 8, 4, 3))


def test_warmup_and_config_validation():
    assert learning_rate(CFG, 0) < learning_rate(CFG, 32) <= CFG.lr == learning_rate(CFG, 10_000)
    with pytest.raises(VcdmError, match="train.precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(VcdmError, match="train.batch_size"):
        TrainConfig(batch_size=10, micro_batches=3)
