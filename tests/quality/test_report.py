"""The summary over training replicates: its arithmetic and its report, on made-up results."""

import json
import math
import re

import numpy as np
import pytest

from vcdm.config import preset
from vcdm.quality import summarize, summarize_replicates, write_summary

ARMS = ("floor", "single", "two_stage", "oracle", "class", "class_two_stage")


def replicate(fids: dict[str, tuple[float, float]]) -> dict:
    """results.json of one replicate with two sampling seeds and the given FIDs per arm."""
    data = {
        "params": {"seeds": [0, 1], "n": 10, "fractions": [1.0], "reference": 20, "data": "x", "train": 30}
    }
    for arm, values in fids.items():
        for seed, fid in zip((0, 1), values, strict=True):
            data[f"final/{arm}/{seed}"] = {"fid": fid, "precision": 0.5, "recall": 0.5, "class_tv": 0.1,
                                           "near_copy": 0.0}  # fmt: skip
    return data


REPS = {
    0: replicate(
        {
            "floor": (1, 1),
            "single": (100, 102),
            "two_stage": (50, 52),
            "oracle": (40, 42),
            "class": (60, 60),
            "class_two_stage": (30, 30),
        }
    ),  # fmt: skip
    1: replicate(
        {
            "floor": (1, 1),
            "single": (80, 80),
            "two_stage": (60, 60),
            "oracle": (50, 50),
            "class": (40, 40),
            "class_two_stage": (50, 50),
        }
    ),  # fmt: skip
}


def test_summary_is_over_replicate_means():
    s = summarize_replicates(REPS)
    single, two = s["rows"]["single"]["fid"], s["rows"]["two_stage"]["fid"]
    assert single["mean"] == pytest.approx((101 + 80) / 2) and single["n"] == 2
    assert single["std"] == pytest.approx(np.std([101, 80], ddof=1))
    assert two["mean"] == pytest.approx((51 + 60) / 2)
    assert s["two_stage_vs_single"]["relative"] == pytest.approx(55.5 / 90.5 - 1)
    assert s["two_stage_vs_single"]["per_train_seed"] == pytest.approx([51 / 101 - 1, 60 / 80 - 1])
    assert s["class_two_stage_vs_class"]["per_train_seed"] == pytest.approx([-0.5, 0.25])
    assert s["oracle_share"] == pytest.approx((90.5 - 55.5) / (90.5 - 45.5))
    # Each replicate's own summary is the single-replicate one.
    assert s["replicates"][1] == summarize(REPS[1])


def test_summary_report_lists_every_replicate(tmp_path):
    info = {"reference": "ref", "classifier": "clf", "accuracy": 0.99, "seconds": 60.0}
    path = write_summary(tmp_path, preset("tiny"), REPS, info)
    text = path.read_text()
    assert "2 training seeds" in text
    assert "**(b) vs (a): FID -38.7%**" in text and "(per training seed: -49.5%, -25.0%)" in text
    assert "not met by the mean (1 of 2 individually)" in text
    assert re.search(
        r"\(d\) vs \(c\): FID [+-]\d+\.\d% \(per training seed: [+-]\d+\.\d%, [+-]\d+\.\d%\)", text
    )
    rows = [line for line in text.splitlines() if line.startswith("| 0 |") or line.startswith("| 1 |")]
    assert len(rows) == 2 and "[report](train_seed_1/report.md)" in rows[1]
    fid_cell = next(x for x in text.splitlines() if x.startswith("| (a) single-stage")).split("|")[2]
    mean, std = (float(x) for x in fid_cell.split("±"))
    assert mean == pytest.approx(90.5, abs=1e-3) and math.isclose(
        std, np.std([101, 80], ddof=1), abs_tol=1e-3
    )
    assert json.loads((tmp_path / "summary.json").read_text())["rows"]["single"]["fid"]["n"] == 2
