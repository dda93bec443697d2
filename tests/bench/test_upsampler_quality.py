"""bench/upsampler_quality.py end to end on the tiny cascade (8 -> 16): every row against bicubic and nearest,
PSNR / SSIM on the true low-res rows, and FID on an Inception stand-in (--inception) for every row, in the
printed table and the report."""

import torch
import torch.nn.functional as F
from fake_data import blobs

import vcdm.data
import vcdm.eval


class _InceptionStandIn:
    name = "inception stand-in"

    def features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return F.avg_pool2d(images, 4).flatten(1)


def test_every_row_is_scored_on_the_inception_features(
    load_bench, cascade_run, tmp_path, monkeypatch, capsys
):
    uq = load_bench("upsampler_quality")
    sets = {"test": blobs(12, size=16, seed=3), "train": blobs(24, size=16, seed=4)}
    monkeypatch.setattr(vcdm.data, "load_dataset", lambda cfg: sets[cfg.split])
    paths = []
    monkeypatch.setattr(
        vcdm.eval, "load_extractor", lambda kind, path: paths.append((kind, path)) or _InceptionStandIn()
    )
    report = tmp_path / "report.md"
    argv = ["--run", str(cascade_run), "--levels", "0", "0.1", "--steps", "2", "--no-fid", "--inception",
            "weights.pth", "--probes", "--report", str(report)]  # fmt: skip
    assert uq.main(argv) == 0
    assert paths == [("inception", "weights.pth")]
    text = report.read_text()
    assert "| FID | FID (Inception) | seconds |" in text and "inception stand-in" in text
    rows = [line.split("|") for line in text.splitlines() if line.startswith(("| nearest", "| bicubic", "| upsampler",
                                                                                 "| real"))]  # fmt: skip
    # nearest, bicubic, the upsampler at 2 levels on true low-res; bicubic and 2 levels on base samples; the floor
    assert len(rows) == 8
    probes = [line.split("|") for line in text.splitlines() if line.startswith("| true")]
    # noise of 1, 2 and 4 grey levels and the blur on the true images: more noise, lower PSNR
    assert [r[1].strip() for r in probes] == ["true + noise 1/255", "true + noise 2/255", "true + noise 4/255",
                                              "true, blurred 0.5 px"]  # fmt: skip
    psnrs = [float(r[4]) for r in probes[:3]]
    assert psnrs[0] > psnrs[1] > psnrs[2] > 30 and all(float(r[7]) >= 0 for r in probes)
    for r in rows:
        assert float(r[7]) >= 0  # every row's Inception FID
    true_rows = [r for r in rows if r[2].strip() == "true low-res"]
    assert all(0 < float(r[5]) <= 1 and float(r[4]) > 0 for r in true_rows)  # SSIM, PSNR
    assert "FID (Inception)" in capsys.readouterr().out
