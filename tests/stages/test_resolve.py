"""config.json tells the truth: data-derived fields are filled in from the data before they are checked."""

import json

import numpy as np

from vcdm.cli import main
from vcdm.pipeline import Pipeline


def _rgb_npz(path, n=24, size=40):
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), labels=np.arange(n) % 3)
    return path


def test_a_32x32_rgb_run_records_what_it_built_and_rebuilds_from_its_directory(tmp_path, capsys):
    data, run = _rgb_npz(tmp_path / "rgb.npz"), tmp_path / "run"
    base = [
        "--preset",
        "tiny",
        "--no-progress",
        "--set",
        f"data.source={data}",
        "--set",
        "data.image_size=32",
    ]
    budget = ["--set", "embedder.train.total_nimg=32", "--set", "prior.train.total_nimg=32",
              "--set", "decoder.train.total_nimg=32", "--set", "baseline.train.total_nimg=32"]  # fmt: skip
    # attention at 16: a feature-map size of the data's 32x32, not of the preset's 28x28
    assert (
        main(["train", "baseline", str(run), *base, *budget, "--set", "baseline.net.attn_resolutions=[16]"])
        == 0
    )
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["baseline"]["net"]["image_size"] == 32 and cfg["baseline"]["net"]["in_channels"] == 3
    assert cfg["embedder"]["encoder"]["image_size"] == 32 and cfg["embedder"]["encoder"]["in_channels"] == 3
    assert cfg["eval"]["classifier"]["num_classes"] == 3
    # the embedding size is the embedder's until embeddings exist, then theirs
    assert (
        cfg["decoder"]["net"]["emb_dim"]
        == cfg["embedder"]["encoder"]["dim"]
        == cfg["prior"]["net"]["emb_dim"]
    )
    for verb in (["train", "embedder"], ["embed"], ["train", "prior"], ["train", "decoder"]):
        assert main([*verb, str(run), "--no-progress"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    meta = json.loads((run / "decoder" / "model.json").read_text())
    assert cfg["decoder"]["net"] == meta["net"]  # what config.json says is what was built
    out = Pipeline.from_run(run)([0, 1])  # the run rebuilds from its directory alone
    assert out.images.shape == (2, 3, 32, 32)


def test_a_wrong_attention_size_names_the_field_and_the_data_sizes(tmp_path, capsys):
    data = _rgb_npz(tmp_path / "rgb.npz")
    argv = ["train", "baseline", str(tmp_path / "run"), "--preset", "tiny", "--no-progress",
            "--set", f"data.source={data}", "--set", "data.image_size=32",
            "--set", "baseline.net.attn_resolutions=[7]"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "vcdm: error: baseline.net.attn_resolutions: 7 is not a feature-map size of this network; "
        "expected values among (32, 16)"
    )
