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
