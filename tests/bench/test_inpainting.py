"""bench/inpainting.py end to end on a tiny run: every row, known pixels kept, the report and the figure."""

import pytest
import torch
from fake_runs import train_tiny_run

from vcdm.cli import main
from vcdm.data import save_images


@pytest.fixture(scope="module")
def inpainting(load_bench):
    return load_bench("inpainting")


def test_hole_psnr_reads_only_the_hole(inpainting):
    truth, masks = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    masks[:, :, :2] = 1
    out = truth.clone()
    out[:, :, 2:] = 5.0  # wrong outside the hole only
    out[:, :, :2] = 0.2  # MSE 0.04 in the hole
    assert inpainting.hole_psnr(out, truth, masks) == pytest.approx(20.0, abs=1e-4)


def test_runs_every_method_on_a_tiny_run(inpainting, tmp_path, monkeypatch):
    monkeypatch.setenv("VCDM_CACHE_DIR", str(tmp_path / "cache"))
    run = train_tiny_run(tmp_path / "run")
    report = tmp_path / "out" / "report.md"
    inpainting.main(["--run", str(run), "--num", "8", "--palette-steps", "2", "--repaint", "4:2", "--jump", "2",
                     "--show", "4", "--report", str(report)])  # fmt: skip
    text = report.read_text()
    methods = ("fill mean", "fill blur", "palette", "repaint baseline (4 steps, r=2)", "y=prior", "y=masked",
               "y=filled", "y=oracle", "y=E(single-stage completion)", "floor")  # fmt: skip
    for method in methods:
        assert method in text
    assert "| 6 |" in text  # RePaint's NFE: 4 steps + 1 jump point x 1 extra pass x 2 steps
    assert list(report.parent.glob("inpaint_mnist*.png")) and (run / "palette" / "model.json").exists()


def test_colorize_rows_on_a_tiny_rgb_folder(inpainting, tmp_path, monkeypatch):
    monkeypatch.setenv("VCDM_CACHE_DIR", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    for k, name in enumerate(("red", "blue")):
        images = torch.rand(24, 3, 16, 16, generator=g) * 0.4 - 0.8
        images[:, 2 * k] += 1.2  # a red or a blue cast
        save_images(images.clamp(-1, 1), tmp_path / "data" / name, [f"{i:02d}" for i in range(24)])
    run = tmp_path / "run"
    assert main(["train", "baseline", str(run), "--preset", "tiny", "--no-progress", "--set",
                 f"data.source={tmp_path / 'data'}", "--set", "data.limit=null"]) == 0  # fmt: skip
    report = tmp_path / "out" / "report.md"
    inpainting.main(["--run", str(run), "--task", "colorize", "--num", "6", "--palette-steps", "2",
                     "--guidance", "1", "2", "--show", "3", "--report", str(report)])  # fmt: skip
    text = report.read_text()
    assert "colour error" in text and "grayscale input (no colour)" in text and "palette (guidance 2)" in text
    assert "repaint" not in text
