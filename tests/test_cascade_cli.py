"""One tiny cascade through the CLI on a fake RGB dataset: embedder, embeddings, prior, a decoder at half the
data's size, the upsampler to the data's size; then `vcdm sample` (the cascade) and `vcdm upsample`."""

import json

import numpy as np
import pytest
from PIL import Image

from vcdm.cli import main
from vcdm.errors import VcdmError
from vcdm.pipeline import Pipeline


@pytest.fixture(scope="module")
def run(cascade_run):
    return cascade_run  # tests/conftest.py


def test_the_stages_train_at_their_own_sizes(run):
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["embedder"]["encoder"]["image_size"] == 16 and cfg["baseline"]["net"]["image_size"] == 16
    assert (
        cfg["decoder"]["net"]["image_size"] == 8 and cfg["upsampler"]["low_res"] is None
    )  # follows the decoder
    up = json.loads((run / "upsampler" / "model.json").read_text())
    assert up["kind"] == "upsampler" and up["net"]["image_size"] == 16 and up["net"]["extra_in_channels"] == 3
    assert up["nimg"] == 64 and up["low_res"] == 8 and up["net"]["aug_embedding"] is True


def test_sample_draws_the_cascade_and_keeps_the_base_samples(run, tmp_path, capsys):
    out = tmp_path / "cascade"
    argv = ["sample", str(run), "--num", "3", "--seed", "4", "--out", str(out), "--no-progress",
            "--upsampler-steps", "3", "--aug-sigma", "0.1", "--upsampler-sampler", "euler"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "000004.png",
        "000005.png",
        "000006.png",
        "grid.png",
        "low_res",
    ]
    assert sorted(p.name for p in (out / "low_res").iterdir()) == [
        "000004.png",
        "000005.png",
        "000006.png",
        "grid.png",
    ]
    assert Image.open(out / "000004.png").size == (16, 16) and Image.open(out / "000004.png").mode == "RGB"
    assert Image.open(out / "low_res" / "000004.png").size == (8, 8)
    assert "3 16x16 samples" in capsys.readouterr().out
    # the base stage alone
    assert main(["sample", str(run), "--num", "1", "--out", str(tmp_path / "base"), "--no-progress",
                 "--no-upsampler"]) == 0  # fmt: skip
    assert Image.open(tmp_path / "base" / "000000.png").size == (8, 8)
    # a stage already at the data's size is not upsampled; asking for the upsampler there is an error
    assert main(["sample", str(run), "--stage", "baseline", "--num", "1", "--out", str(tmp_path / "single"),
                 "--no-progress"]) == 0  # fmt: skip
    assert Image.open(tmp_path / "single" / "000000.png").size == (16, 16)
    assert not (tmp_path / "single" / "low_res").exists()
    with pytest.raises(
        VcdmError, match=r"upsamples 8x8 images \(upsampler.low_res\) but baseline samples 16x16"
    ):
        Pipeline.from_run(run, "baseline", upsampler=True)
    capsys.readouterr()
    assert (
        main(["sample", str(run), "--stage", "baseline", "--out", str(tmp_path / "x"), "--aug-sigma", "0.1"])
        == 2
    )
    assert "--aug-sigma applies to a cascade" in capsys.readouterr().err


def test_upsample_verb_upsamples_image_files(run, tmp_path, capsys):
    inputs = []
    for i, size in enumerate((8, 24)):  # any size: conformed to upsampler.low_res first
        path = tmp_path / f"in{i}.png"
        Image.fromarray(np.full((size, size, 3), 60 * (i + 1), np.uint8)).save(path)
        inputs.append(str(path))
    out = tmp_path / "up"
    argv = ["upsample", str(run), *inputs, "--out", str(out), "--steps", "2", "--aug-sigma", "0", "--seed", "7",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00_in0.png", "01_in1.png", "grid.png", "inputs"]
    assert Image.open(out / "00_in0.png").size == (16, 16) and Image.open(
        out / "inputs" / "01_in1.png"
    ).size == (8, 8)
    assert "upsampled 2 images from 8x8 to 16x16" in capsys.readouterr().out
    # the same image and seed, the same result (here at level 0, alone)
    assert main(["upsample", str(run), inputs[0], "--out", str(tmp_path / "again"), "--steps", "2",
                 "--aug-sigma", "0", "--seed", "7", "--no-progress"]) == 0  # fmt: skip
    a, b = (
        np.asarray(Image.open(p), np.int16) for p in (out / "00_in0.png", tmp_path / "again" / "00_in0.png")
    )
    assert np.abs(a - b).max() <= 1


def test_a_misfit_upsampler_is_a_one_line_error(run, tmp_path, capsys):
    argv = ["train", "upsampler", str(tmp_path / "other"), "--preset", "tiny", "--no-progress",
            f"--set=data.source={run.parent / 'blobs.npz'}", "--set=upsampler.low_res=6"]  # fmt: skip
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "vcdm: error: upsampler.low_res must divide the data's size 16 (data.image_size), got 6"
    )
