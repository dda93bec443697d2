"""The demo end to end on the tiny preset: every stage, both grids, a report with real metrics."""

import pytest

from vcdm.config import preset
from vcdm.demo import run_demo
from vcdm.errors import VcdmError


def test_tiny_demo_writes_grids_and_report(tmp_path, monkeypatch):
    monkeypatch.setenv("VCDM_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    report = run_demo(out, preset("tiny"), num_samples=16, progress=False)
    text = report.read_text()
    for f in ("two_stage.png", "single_stage.png", "config.json", "embeddings.safetensors"):
        assert (out / f).is_file()
    assert "| two-stage |" in text and "| single-stage |" in text and "| real held-out (floor) |" in text
    assert "32 samples per model" in text
    assert any((tmp_path / "cache" / "classifiers").iterdir())  # trained once, cached
    with pytest.raises(VcdmError, match="already holds a finished demo"):
        run_demo(out, preset("tiny"), num_samples=16, progress=False)


def test_a_cascade_demo_trains_its_stages_and_writes_both_sizes(tmp_path):
    import numpy as np
    from PIL import Image

    from vcdm.config import apply_overrides

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rgb.npz", images=rng.integers(0, 256, (32, 16, 16, 3), dtype=np.uint8))
    cfg = apply_overrides(preset("tiny"), [
        f"data.source={tmp_path / 'rgb.npz'}", "decoder.image_size=8", "embedder.image_size=8",
        'demo.stages=["embedder", "prior", "decoder", "upsampler"]', "upsampler.train.total_nimg=64",
        "upsampler.net.base_channels=8", "upsampler.net.channel_mults=[1, 2]", "sample.upsampler_num_steps=2",
    ])  # fmt: skip
    report = run_demo(tmp_path / "demo", cfg, num_samples=4, progress=False).read_text()
    assert (tmp_path / "demo" / "upsampler" / "model.safetensors").is_file()
    assert not (tmp_path / "demo" / "baseline").exists()  # not among demo.stages
    with (
        Image.open(tmp_path / "demo" / "two_stage.png") as big,
        Image.open(tmp_path / "demo" / "two_stage_low_res.png") as small,
    ):
        assert big.size[0] > small.size[0]  # 16x16 tiles against 8x8 tiles
    assert "| upsampler | SR3 upsampler" in report and "two_stage_low_res.png" in report


def test_demo_stages_are_checked():
    from vcdm.config import apply_overrides

    with pytest.raises(VcdmError, match=r"demo.stages must be stages among .* including 'decoder'"):
        apply_overrides(preset("tiny"), ['demo.stages=["embedder", "prior"]'])
