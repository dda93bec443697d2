"""bench/demo_tuning.py on the tiny preset: a configuration trained once, each variant scored like the demo."""

import json

import pytest

from vcdm.errors import VcdmError


def test_demo_tuning_scores_each_variant(load_bench, tmp_path, capsys):
    bench = load_bench("demo_tuning")
    out = tmp_path / "tune"
    argv = ["--out", str(out), "--preset", "tiny", "--num", "16", "--variants", "euler:3:1.0", "dpmpp_2m:3:2.0",
            "--set", "eval.num_samples=16"]  # fmt: skip
    assert bench.main(argv) == 0
    rows = [json.loads(line) for line in (out / "tuning.jsonl").read_text().splitlines()]
    assert [(r["sampler"], r["guidance"]) for r in rows] == [("euler", 1.0), ("dpmpp_2m", 2.0)]
    assert all(r["fid"] > 0 and 0 <= r["recall"] <= 1 and 0 <= r["knn"] <= 1 for r in rows)
    assert rows[0]["fid"] != rows[1]["fid"]  # guidance and sampler reach the samples
    assert "| dpmpp_2m | 3 | 2.0 |" in capsys.readouterr().out
    assert (out / "grid_decoder_euler_3_1.0.png").is_file()


def test_bad_variant_is_one_line(load_bench):
    with pytest.raises(VcdmError, match="SAMPLER:STEPS:GUIDANCE"):
        load_bench("demo_tuning").parse_variant("dpmpp_2m:20")
