"""`vcdm train palette` and `vcdm edit inpaint / uncrop / colorize` on a tiny run, end to end."""

import numpy as np
import pytest
import torch
from fake_runs import train_tiny_run
from PIL import Image

from vcdm.cli import main
from vcdm.data import load_mnist, save_images
from vcdm.data.images import load_pngs


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    common = [str(run_dir), "--preset", "tiny", "--no-progress"]
    assert main(["train", "baseline", *common]) == 0
    assert main(["train", "palette", *common, "--set", "palette.task=inpaint"]) == 0
    return run_dir


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    image = save_images(load_mnist("valid", limit=1).as_float(), folder, ["digit"])[0]
    mask = np.zeros((28, 28), np.uint8)
    mask[8:20, 8:20] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    Image.fromarray(mask[:14, :14]).save(folder / "small.png")
    return folder, str(image)


@pytest.mark.parametrize("method", ["palette", "repaint"])
def test_inpaint_fills_the_hole_and_keeps_the_rest(run_dir, files, tmp_path, method, capsys):
    folder, image = files
    out = tmp_path / method
    argv = ["edit", "inpaint", str(run_dir), image, "--mask", str(folder / "mask.png"), "--num", "2",
            "--steps", "4", "--method", method, "--out", str(out)]  # fmt: skip
    if method == "repaint":
        argv += ["--resamplings", "2", "--jump-length", "2"]
    assert main(argv) == 0
    assert f"wrote 2 outputs ({method})" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid.png", "input.png", "seed000000.png", "seed000001.png"]
    original, filled = load_pngs([image])[0], load_pngs([out / "seed000000.png"])[0]
    keep = torch.ones(28, 28, dtype=torch.bool)
    keep[8:20, 8:20] = False
    assert torch.equal(filled[:, keep], original[:, keep])


def test_default_method_is_the_runs_palette_model_and_uncrop_works(run_dir, files, tmp_path, capsys):
    _, image = files
    out = tmp_path / "uncrop"
    assert main(["edit", "uncrop", str(run_dir), image, "--side", "left", "--width", "0.25", "--num", "1",
                 "--steps", "3", "--out", str(out)]) == 0  # fmt: skip
    assert "(palette)" in capsys.readouterr().out
    original, filled = load_pngs([image])[0], load_pngs([out / "seed000000.png"])[0]
    assert torch.equal(filled[..., 7:], original[..., 7:])


def test_wrong_mask_size_is_one_line_naming_the_file(run_dir, files, tmp_path, capsys):
    folder, image = files
    code = main(["edit", "inpaint", str(run_dir), image, "--mask", str(folder / "small.png"),
                 "--out", str(tmp_path / "x")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "small.png: the mask is 14x14 but the image is 28x28" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_colorize_needs_a_colorize_model(run_dir, files, tmp_path, capsys):
    _, image = files
    assert main(["edit", "colorize", str(run_dir), image, "--out", str(tmp_path / "c")]) == 2
    assert "trained for 'inpaint', not 'colorize'" in capsys.readouterr().err


def test_palette_conditioned_on_y_and_label(files, tmp_path, capsys):
    # a Palette model that also reads y and the class: y embeds the blur-filled input, the class is --label
    # (prior and decoder: load_pipeline loads the two-stage pipeline's prior)
    run = train_tiny_run(tmp_path / "run", ("prior", "decoder"))
    common = [str(run), "--preset", "tiny", "--no-progress"]
    assert main(["train", "palette", *common, "--set", "palette.condition=embedding+label"]) == 0
    folder, image = files
    argv = [
        "edit",
        "inpaint",
        str(run),
        image,
        "--mask",
        str(folder / "mask.png"),
        "--num",
        "1",
        "--steps",
        "2",
    ]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "give --label" in capsys.readouterr().err
    assert main([*argv, "--label", "3", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "seed000000.png").exists()
