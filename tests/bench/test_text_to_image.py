"""bench/text_to_image.py end to end on a tiny text run on fake captioned data: both arms at two guidance weights,
the judge CLIP's figures, and FID / precision / recall against the test split on the evaluation classifier's
features and on an Inception stand-in (--inception), all finite, in results.json and in the report's table."""

import json
import math

import torch
import torch.nn.functional as F
from fake_data import captioned
from fake_runs import text_cfg

from vcdm.data import ImageData
from vcdm.stages import compute_embeddings, train_stage


def _labelled() -> ImageData:
    """The captioned shapes, labelled by colour (the evaluation classifier needs labels)."""
    d = captioned()
    colours = sorted({c.split()[0] for c in d.captions})
    labels = torch.tensor([colours.index(c.split()[0]) for c in d.captions])
    return ImageData(d.images, labels, tuple(colours), "shapes", d.captions)


class _InceptionStandIn:
    """What the bench reads of an Inception extractor: its name and features (N, D)."""

    name = "inception stand-in"

    def features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return F.avg_pool2d(images, 4).flatten(1)


def test_runs_both_arms_and_scores_fid_on_image_features(load_bench, tmp_path, monkeypatch):
    monkeypatch.setenv("VCDM_CACHE_DIR", str(tmp_path / "cache"))
    t2i = load_bench("text_to_image")
    data, run, cfg = _labelled(), tmp_path / "run", text_cfg()
    train_stage("clip", run, cfg, data, progress=False)
    compute_embeddings(run, cfg, data, progress=False)
    for stage in ("prior", "decoder", "baseline"):
        train_stage(stage, run, cfg, data, progress=False)
    monkeypatch.setattr(t2i, "load_splits", lambda cfg: (data, data))
    paths = []
    monkeypatch.setattr(
        t2i, "load_extractor", lambda kind, path: paths.append((kind, path)) or _InceptionStandIn()
    )
    out = tmp_path / "out"
    assert t2i.main([str(run), "--prompts", "3", "--per-prompt", "2", "--guidance", "1", "2", "--steps", "2",
                     "--judge-nimg", "32", "--inception", "weights.pth", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    assert paths == [("inception", "weights.pth")]
    result = json.loads((out / "results.json").read_text())
    assert [(r["arm"], r["guidance"]) for r in result["rows"]] == [("unCLIP", 1), ("unCLIP", 2), ("GLIDE", 1),
                                                                   ("GLIDE", 2)]  # fmt: skip
    assert result["test_images"] == len(data) and result["image_features"][1] == "inception stand-in"
    for row in result["rows"]:
        for key in ("clip_score", "r_precision", "fid_judge", "diversity"):  # the judge's figures are kept
            assert math.isfinite(row[key])
        for feats in ("classifier", "inception"):
            assert row[f"fid_{feats}"] >= 0 and math.isfinite(row[f"fid_{feats}"])
            assert 0 <= row[f"precision_{feats}"] <= 1 and 0 <= row[f"recall_{feats}"] <= 1
    report = (out / "report.md").read_text()
    assert "| FID (classifier) | P (classifier) | R (classifier) | FID (inception) |" in report
    assert report.count("| unCLIP |") == 2 and report.count("| GLIDE |") == 2
