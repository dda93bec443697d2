"""`vcdm train classifier` and `vcdm fid` on every kind of side: run, folder, .npz, stats file, mnist split."""

import re

import numpy as np
import pytest

from vcdm.cli import main
from vcdm.data import load_mnist, save_images

TINY = ["--preset", "tiny", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("fidrun")
    assert main(["train", "baseline", str(run), *TINY]) == 0
    assert main(["train", "classifier", str(run), *TINY]) == 0
    return run


def _fid(capsys, *args):
    assert main(["fid", *args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"FID (\d+\.\d+)", out)
    assert m, out
    return float(m.group(1)), out


def test_fid_between_all_kinds_of_sides(run, tmp_path, capsys):
    clf = str(run / "classifier")
    test = load_mnist("test", limit=64)
    save_images(test.as_float(), tmp_path / "folder", [f"{i:03d}.png" for i in range(64)])
    np.savez(tmp_path / "imgs.npz", images=test.images[:, 0].numpy())
    same, out = _fid(capsys, str(tmp_path / "folder"), str(tmp_path / "imgs.npz"), "--classifier", clf)
    assert same < 1e-6 and "precision 1.0000, recall 1.0000" in out  # the same images two ways
    stats = tmp_path / "ref_stats.npz"
    fid_run, _ = _fid(capsys, str(run), "mnist:test", "--classifier", clf, "--num", "64", "--stage", "baseline",
                      "--save-stats", str(stats))  # fmt: skip
    fid_stats, out = _fid(
        capsys, str(run), str(stats), "--classifier", clf, "--num", "64", "--stage", "baseline"
    )
    assert fid_run > 0 and fid_stats == pytest.approx(fid_run, rel=1e-6)
    assert "precision" not in out  # only statistics on one side


def test_fid_errors(run, tmp_path, capsys):
    assert main(["fid", str(run), "mnist:test", "--classifier", str(run / "nope.safetensors")]) == 2
    assert "nope.safetensors does not exist" in capsys.readouterr().err
    assert main(["fid", str(run), "mnist:test", "--features", "inception"]) == 2
    assert "--inception" in capsys.readouterr().err
    clf = str(run / "classifier")
    assert main(["fid", str(run), "mnist:test", "--classifier", clf]) == 2
    assert "pass --num" in capsys.readouterr().err
