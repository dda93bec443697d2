"""PNG parameters (vcdm.pngmeta): the chunk round-trips and leaves the pixels alone; `vcdm sample` writes it
into every PNG and `vcdm sample --from-png` redraws the image."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vcdm import __version__, pngmeta
from vcdm.cli import main
from vcdm.config import SampleConfig
from vcdm.data.images import save_png
from vcdm.errors import VcdmError


def _png(tmp_path, name="a.png"):
    path = tmp_path / name
    save_png(torch.arange(48, dtype=torch.uint8).reshape(3, 4, 4), path)
    return path


def test_chunk_round_trips_and_keeps_pixels(tmp_path):
    path = _png(tmp_path)
    before = path.read_bytes()
    meta = pngmeta.params(
        tmp_path, "decoder", 7, SampleConfig(), label=3, prompt="un chat \u00e9t\u00e9", num=None
    )
    pngmeta.write(path, meta)
    after = path.read_bytes()
    assert after[: len(before) - 12] == before[:-12] and after.endswith(before[-12:])  # only a chunk added
    got = pngmeta.read(path)
    assert got == meta and got["vcdm"] == __version__ and got["seed"] == 7 and "num" not in got
    assert got["prompt"] == "un chat \u00e9t\u00e9" and got["sampler"] == SampleConfig().sampler
    with Image.open(path) as a, Image.open(io.BytesIO(before)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    pngmeta.write(path, meta | {"seed": 8})  # replaced, not added twice
    assert pngmeta.read(path.read_bytes())["seed"] == 8 and path.read_bytes().count(b"iTXtvcdm") == 1


def test_read_refuses_pngs_without_parameters(tmp_path):
    with pytest.raises(VcdmError, match="carries no vcdm parameters"):
        pngmeta.read(_png(tmp_path))
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(VcdmError, match="cannot read"):
        pngmeta.read(tmp_path / "x.png")
    with pytest.raises(VcdmError, match="not a PNG"):
        pngmeta.with_params(b"GIF89a", {})


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    assert main(["train", "baseline", str(run), "--preset", "tiny", "--no-progress"]) == 0
    return run


def test_sample_writes_parameters_and_from_png_redraws(baseline_run, tmp_path):
    out = tmp_path / "s"
    argv = ["sample", str(baseline_run), "--stage", "baseline", "--num", "3", "--seed", "5", "--steps", "4"]
    assert main([*argv, "--sampler", "euler", "--out", str(out), "--no-progress"]) == 0
    meta = pngmeta.read(out / "000006.png")
    assert meta["run"] == str(baseline_run.resolve()) and meta["stage"] == "baseline"
    assert (meta["seed"], meta["num_steps"], meta["sampler"]) == (6, 4, "euler") and "num" not in meta
    assert pngmeta.read(out / "grid.png")["num"] == 3
    again = tmp_path / "again"
    assert main(["sample", "--from-png", str(out / "000006.png"), "--out", str(again), "--no-progress"]) == 0
    assert sorted(p.name for p in again.iterdir()) == ["000006.png", "grid.png"]
    assert (again / "000006.png").read_bytes() == (out / "000006.png").read_bytes()
    # a flag given on the command line wins over the PNG's
    other = tmp_path / "other"
    assert main(["sample", "--from-png", str(out / "grid.png"), "--steps", "3", "--out", str(other),
                 "--no-progress"]) == 0  # fmt: skip
    assert sorted(p.name for p in other.iterdir()) == ["000005.png", "000006.png", "000007.png", "grid.png"]
    assert pngmeta.read(other / "000007.png")["num_steps"] == 3


def test_sample_without_run_or_png_is_refused(capsys):
    assert main(["sample"]) == 2
    assert "give RUN" in capsys.readouterr().err
