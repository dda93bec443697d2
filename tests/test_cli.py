"""One small end-to-end two-stage run through the CLI (tiny preset, 256 MNIST images, seconds)."""

import json

import pytest
import torch
from fake_runs import train_tiny_run
from PIL import Image

from vcdm.cli import main
from vcdm.pipeline import Pipeline


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("run"), embed_args=["--set", "embedder.aug_copies=1"])


def test_run_directory_layout(run):
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["embedder"]["aug_copies"] == 1  # the override was saved with the run
    for stage in ("embedder", "prior", "decoder", "baseline"):
        meta = json.loads((run / stage / "model.json").read_text())
        assert meta["nimg"] == 256 and (run / stage / "model.safetensors").is_file()
        assert any((run / stage / "checkpoints").iterdir())
    assert json.loads((run / "decoder" / "model.json").read_text())["net"]["emb_dim"] == 8
    assert json.loads((run / "baseline" / "model.json").read_text())["net"]["emb_dim"] == 0


def test_sample_writes_pngs_and_grid_two_stage_and_single_stage(run, tmp_path):
    for stage in ("decoder", "baseline"):
        out = tmp_path / stage
        assert main(["sample", str(run), "--stage", stage, "--num", "3", "--seed", "5",
                     "--out", str(out), "--no-progress"]) == 0  # fmt: skip
        names = sorted(p.name for p in out.iterdir())
        assert names == ["000005.png", "000006.png", "000007.png", "grid.png"]
        assert Image.open(out / "000005.png").size == (28, 28)


def test_same_seed_same_image_whatever_the_batch(run):
    pipe = Pipeline.from_run(run, "decoder")
    from vcdm.config import SampleConfig

    cfg = SampleConfig(num_steps=3, prior_num_steps=3, batch_size=4)
    a = pipe([3, 4, 5, 6, 7], cfg)
    b = pipe([5], SampleConfig(num_steps=3, prior_num_steps=3, batch_size=1))
    # Same noise and the same computation; only float rounding differs (conv/matmul kernels block the batch
    # differently), well below one 8-bit grey level (0.0078 in [-1, 1]).
    assert (a.images[2] - b.images[0]).abs().max() < 2e-3
    assert torch.allclose(a.embeddings[2], b.embeddings[0], atol=1e-4)
    assert a.embeddings.shape == (5, 8)


def test_finished_stage_and_full_output_dir_need_force(run, tmp_path, capsys):
    assert main(["train", "decoder", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a decoder model trained for 256 images; pass --force" in err
    assert "--set decoder.train.total_nimg=N" in err
    out = tmp_path / "s"
    out.mkdir()
    (out / "keep.png").write_bytes(b"x")
    assert main(["sample", str(run), "--num", "1", "--out", str(out), "--no-progress"]) == 2
    assert "already holds samples; pass --force" in capsys.readouterr().err
    assert (out / "keep.png").read_bytes() == b"x"


def test_bad_override_is_a_one_line_error(tmp_path, capsys):
    assert main(["train", "decoder", str(tmp_path), "--set", "decoder.net.base_channels=abc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "decoder.net.base_channels must be an integer" in err


def test_guided_sampling_through_the_cli(run, tmp_path):
    common = [str(run), "--preset", "tiny", "--no-progress"]
    assert main(["train", "noisy-classifier", *common]) == 0
    out = tmp_path / "guided"
    assert main(["sample", str(run), "--stage", "baseline", "--num", "2", "--label", "3", "--classifier-scale", "2",
                 "--threshold", "dynamic", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "grid.png"]


def test_bench_quality_is_wired(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["bench", "quality", "--help"])
    assert "two-stage" in capsys.readouterr().out
