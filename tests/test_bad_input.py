"""Bad input through the CLI: a one-line error naming the file or field, exit status 2, no traceback, and
nothing the user had is overwritten."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vcdm.cli import main

TINY = ["--preset", "tiny", "--no-progress"]


def _img(path: Path, size=(8, 8), mode="L", value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value,) * 3).save(path)


def _folder(root: Path, case: str) -> Path:
    d = root / "data"
    if case == "corrupt":
        for i in range(2):
            _img(d / "a" / f"{i}.png")
        (d / "a" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif case == "truncated":
        for i in range(2):
            _img(d / "a" / f"{i}.png")
        _img(d / "a" / "big.png", size=(64, 64), value=200)
        data = (d / "a" / "big.png").read_bytes()
        (d / "a" / "big.png").write_bytes(data[: len(data) // 2])
    elif case == "empty":
        d.mkdir(parents=True)
    elif case == "sizes":
        _img(d / "a" / "0.png", size=(8, 8))
        _img(d / "a" / "1.png", size=(9, 8))
    elif case == "modes":
        _img(d / "a" / "0.png", mode="L")
        _img(d / "a" / "1.png", mode="RGB")
    elif case == "one":
        _img(d / "a" / "0.png")
        _img(d / "a" / "1.png")
        _img(d / "b" / "0.png")
    return d


def _npz(root: Path, case: str) -> Path:
    p = root / "data.npz"
    if case == "keys":
        np.savez(p, pictures=np.zeros((4, 8, 8), np.uint8))
    elif case == "dtype":
        np.savez(p, images=np.zeros((4, 8, 8), np.float32))
    elif case == "labels":
        np.savez(p, images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(3, np.int64))
    return p


CASES = {
    # case: (make data, regex the whole stderr line must match)
    "corrupt image": (lambda r: _folder(r, "corrupt"), r"vcdm: error: .*a/2\.png.*"),
    "truncated image": (lambda r: _folder(r, "truncated"), r"vcdm: error: .*a/big\.png.*"),
    "empty folder": (lambda r: _folder(r, "empty"), r"vcdm: error: .*data.*no images.*"),
    "mixed sizes": (lambda r: _folder(r, "sizes"), r"vcdm: error: .*1\.png.*9x8.*image_size.*"),
    "mixed modes": (lambda r: _folder(r, "modes"), r"vcdm: error: .*1\.png.*channels.*"),
    "one-image class": (
        lambda r: _folder(r, "one"),
        r"vcdm: error: .*data/b: class folder has 1 image\(s\), expected at least 2.*",
    ),
    "npz wrong keys": (lambda r: _npz(r, "keys"), r"vcdm: error: .*data\.npz.*'images'.*pictures.*"),
    "npz wrong dtype": (
        lambda r: _npz(r, "dtype"),
        r"vcdm: error: .*data\.npz: .images. has dtype float32, expected uint8.*",
    ),
    "npz label length": (lambda r: _npz(r, "labels"), r"vcdm: error: .*data\.npz.*labels.*"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_is_a_one_line_error(case, tmp_path, capsys):
    make, pattern = CASES[case]
    source = make(tmp_path)
    code = main(["train", "embedder", str(tmp_path / "run"), *TINY, "--set", f"data.source={source}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and re.fullmatch(pattern, err.strip(), flags=re.IGNORECASE), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "decoder.net.channel_mults=[1,2,2,2,2,2]",
            "vcdm: error: decoder.net.image_size: expected a multiple of 32",
        ),
        ("decoder.train.lr=-1", "vcdm: error: decoder.train.lr must be a positive number, got -1.0"),
        (
            "decoder.condtion=none",
            "vcdm: error: unknown config field 'decoder.condtion'; allowed fields: "
            "cond_drop_prob, condition, diffusion, image_size, net, space, text_drop_prob, train",
        ),  # fmt: skip
        ("sample.num_steps=0", "vcdm: error: sample.num_steps must be an integer >= 1, got 0"),
    ],
)
def test_bad_config_names_the_field(override, message, tmp_path, capsys):
    code = main(["train", "baseline", str(tmp_path / "run"), *TINY, "--set", override])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_bad_config_file_names_file_and_field(tmp_path, capsys):
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({"decoder": {"train": {"precison": "bf16"}}}))
    assert main(["train", "baseline", str(tmp_path / "run"), "--config", str(f), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"vcdm: error: {f}: unknown config field 'decoder.train.precison'; allowed fields: batch_size, betas, "
        "checkpoint_every_nimg, ema_halflife_nimg, ema_rampup, grad_clip, keep_checkpoints, log_every_nimg, lr, "
        "max_seconds, micro_batches, precision, seed, total_nimg, warmup_nimg, weight_decay\n"
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("trained")
    assert main(["train", "baseline", str(run), *TINY, "--set", "baseline.train.total_nimg=64"]) == 0
    return run


def test_checkpoint_from_another_model_is_refused(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "baseline" / "model.json").unlink()  # unfinished: the next command resumes from the checkpoint
    args = ["train", "baseline", str(run), "--no-progress", "--set", "baseline.net.base_channels=16"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"vcdm: error: .*state-0+64\.safetensors: checkpoint was written for a different model or "
                        r"config; use a new run directory or --force to start over", err.strip()), err  # fmt: skip


def test_truncated_checkpoint_is_named(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "baseline" / "model.json").unlink()
    ckpt = sorted((run / "baseline" / "checkpoints").iterdir())[-1]
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert main(["train", "baseline", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"vcdm: error: {ckpt}: not a readable safetensors checkpoint") and err.count("\n") == 1
    )


def test_export_into_wrong_architecture(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    meta = json.loads((run / "baseline" / "model.json").read_text())
    meta["net"]["channel_mults"] = [1, 2, 2]
    (run / "baseline" / "model.json").write_text(json.dumps(meta))
    assert main(["sample", str(run), "--stage", "baseline", "--num", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vcdm: error: {run / 'baseline' / 'model.safetensors'}: weights do not fit this "
                          "architecture: missing ") and err.count("\n") == 1  # fmt: skip


def test_results_are_never_overwritten_without_force(trained, tmp_path, capsys):
    out = tmp_path / "samples"
    assert (
        main(
            ["sample", str(trained), "--stage", "baseline", "--num", "2", "--out", str(out), "--no-progress"]
        )
        == 0
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["sample", str(trained), "--stage", "baseline", "--num", "2", "--seed", "9", "--out", str(out),
                 "--no-progress"]) == 2  # fmt: skip
    assert capsys.readouterr().err.startswith(f"vcdm: error: {out} already holds samples; pass --force")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["sample", str(trained), "--stage", "baseline", "--num", "2", "--seed", "9", "--out", str(out),
                 "--no-progress", "--force"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["000009.png", "000010.png", "grid.png"]
