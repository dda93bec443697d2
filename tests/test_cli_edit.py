"""`vcdm edit ...` on a tiny trained run, through the subcommand's parser and handler."""

import argparse
import inspect
import json

import pytest
import torch
from fake_runs import train_tiny_run

from vcdm.cli.edit import add_parser, run
from vcdm.data import load_mnist, save_images
from vcdm.data.images import load_pngs
from vcdm.editing import load_latent
from vcdm.errors import VcdmError
from vcdm.samplers import euler

HAS_CORRECT_HOOK = "correct" in inspect.signature(euler).parameters


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    return [str(p) for p in save_images(load_mnist("valid", limit=2).as_float(), folder, ["a", "b"])]


@pytest.fixture(scope="module")
def inverted(run_dir, pngs, tmp_path_factory):
    out = tmp_path_factory.mktemp("invert")
    edit("invert", run_dir, *pngs, "--steps", "20", "--out", out, "--force")
    return out


def edit(*argv) -> None:
    parser = argparse.ArgumentParser(prog="vcdm")
    add_parser(parser.add_subparsers(dest="command"))
    run(parser.parse_args(["edit", *map(str, argv)]))


def _png(path):
    return load_pngs([path])[0]


def test_invert_writes_reconstructions_psnr_and_latent(inverted, pngs, capsys):
    names = sorted(p.name for p in inverted.iterdir())
    assert names == ["grid.png", "input_00_a.png", "input_01_b.png", "latent.safetensors", "psnr.json",
                     "recon_00_a.png", "recon_01_b.png"]  # fmt: skip
    report = json.loads((inverted / "psnr.json").read_text())
    assert report["num_steps"] == 20 and report["fixed_point_iters"] == 3
    assert all(v > 30 for v in report["psnr_db"].values())  # measured ~42 dB
    y, x_T, meta = load_latent(inverted / "latent.safetensors")
    assert y.shape == (2, 8) and x_T.shape == (2, 1, 28, 28) and meta["num_steps"] == "20"
    assert (_png(inverted / "input_00_a.png") - _png(pngs[0])).abs().max() == 0


def test_variations_from_a_latent_or_the_image_agree(run_dir, inverted, pngs, tmp_path):
    edit("variations", run_dir, "--latent", inverted / "latent.safetensors", "--index", "1", "--num", "2",
         "--seed", "3", "--out", tmp_path / "lat")  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "lat").iterdir()) == [
        "grid.png",
        "seed000003.png",
        "seed000004.png",
    ]
    edit(
        "variations",
        run_dir,
        pngs[1],
        "--num",
        "2",
        "--seed",
        "3",
        "--steps",
        "20",
        "--out",
        tmp_path / "img",
    )
    for name in ("seed000003.png", "seed000004.png"):  # same y, same seeds, same 20 steps (the latent's)
        assert (_png(tmp_path / "lat" / name) - _png(tmp_path / "img" / name)).abs().max() <= 2 / 255
    with pytest.raises(VcdmError, match="exactly one of IMAGE and --latent"):
        edit(
            "variations",
            run_dir,
            pngs[0],
            "--latent",
            inverted / "latent.safetensors",
            "--out",
            tmp_path / "x",
        )


def test_interpolate_and_embed_edit_start_from_the_reconstruction(run_dir, inverted, tmp_path):
    recon = _png(inverted / "recon_00_a.png")
    edit("interpolate", run_dir, "--latent", inverted / "latent.safetensors", "--frames", "3",
         "--out", tmp_path / "interp")  # fmt: skip
    assert (_png(tmp_path / "interp" / "frame00.png") - recon).abs().max() <= 2 / 255
    assert (
        _png(tmp_path / "interp" / "frame02.png") - _png(inverted / "recon_01_b.png")
    ).abs().max() <= 2 / 255
    edit("embed-edit", run_dir, "--latent", inverted / "latent.safetensors", "--classes", "1", "7",
         "--strengths", "-1", "0", "1", "--out", tmp_path / "edit")  # fmt: skip
    files = sorted(p.name for p in (tmp_path / "edit").iterdir())
    assert files == ["grid.png", "strength00_-1.00.png", "strength01_+0.00.png", "strength02_+1.00.png"]
    assert (_png(tmp_path / "edit" / "strength01_+0.00.png") - recon).abs().max() <= 2 / 255


def test_sdedit_rows_per_seed_and_columns_per_sigma(run_dir, pngs, tmp_path):
    for stage in ("decoder", "baseline"):
        out = tmp_path / stage
        edit("sdedit", run_dir, pngs[0], "--sigma0", "0", "1.5", "--num", "2", "--steps", "6",
             "--stage", stage, "--out", out)  # fmt: skip
        assert len(list(out.glob("seed*.png"))) == 4
        assert torch.equal(_png(out / "seed000001_sigma0.png"), _png(pngs[0]))  # sigma_0 = 0: the input
        assert not torch.equal(_png(out / "seed000001_sigma1.5.png"), _png(pngs[0]))


def test_ilvr_factor_one_copies_the_reference(run_dir, pngs, tmp_path):
    argv = ["ilvr", run_dir, pngs[0], "--factor", "1", "4", "--num", "1", "--steps", "4", "--out", tmp_path]
    if not HAS_CORRECT_HOOK:
        with pytest.raises(VcdmError, match="has no `correct` hook"):
            edit(*argv)
        assert not tmp_path.exists() or not any(tmp_path.iterdir())
        return
    edit(*argv)
    assert torch.equal(_png(tmp_path / "seed000000_factor1.png"), _png(pngs[0]))
    with pytest.raises(VcdmError, match="factor 3 must divide"):
        edit("ilvr", run_dir, pngs[0], "--factor", "3", "--steps", "2", "--out", tmp_path / "bad")


def test_user_errors_are_vcdm_errors_and_leave_outputs_alone(run_dir, pngs, tmp_path):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.png").write_bytes(b"x")
    with pytest.raises(VcdmError, match="already holds edits; pass --force"):
        edit("invert", run_dir, pngs[0], "--steps", "2", "--out", out)
    assert (out / "keep.png").read_bytes() == b"x"
    with pytest.raises(VcdmError, match="missing.png: image file not found"):
        edit("invert", run_dir, tmp_path / "missing.png", "--out", tmp_path / "o1")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(VcdmError, match="text.png: not a readable image"):
        edit("sdedit", run_dir, tmp_path / "text.png", "--out", tmp_path / "o2")
    with pytest.raises(VcdmError, match="no text encoder"):
        edit("embed-edit", run_dir, pngs[0], "--texts", "one", "seven", "--out", tmp_path / "o3")
    with pytest.raises(VcdmError, match="give exactly one direction"):
        edit("embed-edit", run_dir, pngs[0], "--out", tmp_path / "o4")
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "o4"))
