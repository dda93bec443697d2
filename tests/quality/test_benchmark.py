"""The quality benchmark end to end on the tiny preset (a few seconds), through the CLI handler."""

import argparse
import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from vcdm.cli.bench import add_parser, run
from vcdm.config import preset
from vcdm.errors import VcdmError
from vcdm.quality import (
    ARMS,
    arm_config,
    image_seeds,
    load_splits,
    run_quality_benchmark,
    scale_budgets,
    select_arms,
    summarize,
    with_train_seed,
)

ROWS = ("real held-out images (floor)", "(a) single-stage", "(b) two-stage", "(b) oracle", "(c) class-conditional",
        "(d) class-cond. two-stage")  # fmt: skip
ARGS = ["--preset", "tiny", "--scale", "0.5", "--seeds", "0", "1", "--num-samples", "12", "--reference-size", "128",
        "--budgets", "0.5", "1", "--no-progress"]  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="vcdm")
    add_parser(ap.add_subparsers(dest="command", required=True))
    return ap.parse_args(argv)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("quality")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VCDM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        run(parse(["bench", "quality", "--out", str(out), *ARGS]))
        yield out


def test_cli_parses_the_benchmark_options():
    args = parse(
        ["bench", "quality", "--scale", "4", "--seeds", "3", "5", "--data", "x.npz", "--set", "a.b=1"]
    )
    assert (args.command, args.bench, args.scale, args.seeds, args.data) == (
        "bench",
        "quality",
        4.0,
        [3, 5],
        "x.npz",
    )
    assert (
        args.overrides == ["a.b=1"] and args.budgets == [0.125, 0.25, 0.5, 1.0] and args.out == "runs/quality"
    )


def test_report_has_every_row_with_finite_numbers(bench):
    report = (bench / "report.md").read_text()
    for row in ROWS:
        line = next((x for x in report.splitlines() if x.startswith(f"| {row}")), None)
        assert line is not None, f"missing row {row!r}"
        cells = line.strip("|").split("|")[1:]
        assert len(cells) == 5  # FID, precision, recall, class TV, near copies
        for cell in cells:
            mean, std = (float(x) for x in cell.split("±"))  # two seeds: mean ± std
            assert math.isfinite(mean) and math.isfinite(std) and std >= 0
    assert re.search(r"\(b\) vs \(a\): FID [+-]\d+\.\d%", report)
    for section in ("## FID along training", "## The prior's own quality", "## Memorisation", "## Compute"):
        assert section in report
    assert (bench / "fid_vs_budget.png").stat().st_size > 1000
    assert all((bench / f"samples_{arm.key}.png").is_file() for arm in ARMS)


def test_results_hold_the_arithmetic_the_report_states(bench):
    data = json.loads((bench / "results.json").read_text())
    fid = {
        k: np.mean([data[f"final/{k}/{s}"]["fid"] for s in (0, 1)]) for k in ("single", "two_stage", "oracle")
    }
    summ = summarize(data)
    assert summ["two_stage_vs_single"]["relative"] == pytest.approx(
        (fid["two_stage"] - fid["single"]) / fid["single"]
    )
    assert len(summ["two_stage_vs_single"]["per_seed"]) == 2
    share = summ["oracle_share"]
    gain = fid["single"] - fid["oracle"]
    assert (math.isnan(share) and gain <= 0) or share == pytest.approx(
        (fid["single"] - fid["two_stage"]) / gain
    )
    # Curve points at half the budget for (a) and (b), the prior scored at each of its budgets.
    assert {k for k in data if k.startswith("curve/")} == {"curve/single/64", "curve/two_stage/64"}
    assert sorted(k for k in data if k.startswith("prior_curve/")) == ["prior_curve/128", "prior_curve/64"]
    assert all(math.isfinite(data[k]) and data[k] >= 0 for k in data if k.startswith("prior_curve/"))
    memo = data["final/single/0"]["memorization"]
    assert 0 <= memo["near_copy"] <= 1 and memo["sample_median"] > 0
    assert data["timing/two_stage"]["prior_share"] > 0 and "prior_share" not in data["timing/single"]


def test_all_decoders_have_the_same_budget_and_the_right_condition(bench):
    for arm in ARMS:
        meta = json.loads((bench / arm.key / arm.section / "model.json").read_text())
        assert meta["nimg"] == 128 and meta["condition"] == arm.condition
    prior = json.loads((bench / "class_two_stage" / "prior" / "model.json").read_text())
    assert prior["net"]["num_classes"] == 10


def test_rerun_reuses_everything_and_another_config_needs_force(bench):
    before = (bench / "results.json").read_text()
    mtimes = {arm.key: (bench / arm.key / arm.section / "model.json").stat().st_mtime_ns for arm in ARMS}
    run(parse(["bench", "quality", "--out", str(bench), *ARGS]))
    after = json.loads((bench / "results.json").read_text())
    assert after["final/two_stage/1"] == json.loads(before)["final/two_stage/1"]
    assert mtimes == {
        arm.key: (bench / arm.key / arm.section / "model.json").stat().st_mtime_ns for arm in ARMS
    }
    with pytest.raises(VcdmError, match="--force"):
        run(parse(["bench", "quality", "--out", str(bench), *ARGS, "--set", "sample.num_steps=3"]))


def test_scale_budgets_and_arm_configs():
    cfg = preset("tiny")
    scaled = scale_budgets(cfg, 2.0)
    assert scaled.decoder.train.total_nimg == 512 and scaled.prior.train.total_nimg == 512
    assert (
        scale_budgets(cfg, 0.01).decoder.train.total_nimg == cfg.decoder.train.batch_size
    )  # at least a batch
    with pytest.raises(VcdmError, match="scale"):
        scale_budgets(cfg, 0)
    conds = {arm.key: arm_config(cfg, arm) for arm in ARMS}
    assert conds["single"].baseline.condition == "none" and conds["class"].baseline.condition == "label"
    assert (
        conds["two_stage"].decoder.condition == "embedding" and not conds["two_stage"].prior.class_conditional
    )
    assert conds["class_two_stage"].decoder.condition == "embedding+label"
    assert conds["class_two_stage"].prior.class_conditional


def test_unfair_budgets_are_refused(tmp_path):
    from dataclasses import replace

    cfg = preset("tiny")
    cfg = replace(cfg, baseline=replace(cfg.baseline, train=replace(cfg.baseline.train, total_nimg=512)))
    with pytest.raises(VcdmError, match="same U-Net size and image budget"):
        run_quality_benchmark(tmp_path, cfg)


def test_splits_of_user_data_are_disjoint_and_need_labels(tmp_path):
    from dataclasses import replace

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(100) % 4)
    cfg = replace(preset("tiny"), data=replace(preset("tiny").data, source=str(tmp_path / "d.npz")))
    s = load_splits(cfg, num_sets=2, n=50)
    assert (len(s.reference), len(s.heldout), len(s.train), s.n) == (20, 20, 60, 10)
    flat = {tuple(x.flatten().tolist()) for part in (s.train, s.reference, s.heldout) for x in part.images}
    assert len(flat) == 100  # every image in exactly one split
    np.savez(tmp_path / "u.npz", images=images)
    with pytest.raises(VcdmError, match="needs class labels"):
        load_splits(replace(cfg, data=replace(cfg.data, source=str(tmp_path / "u.npz"))), 2, 10)


def test_image_seeds_are_disjoint_and_give_uniform_labels():
    a, b = image_seeds(0, 20), image_seeds(1, 20)
    assert not set(a) & set(b)
    assert np.bincount([s % 10 for s in b], minlength=10).tolist() == [2] * 10


def test_training_replicates_each_get_a_report_and_the_summary_spans_them(tmp_path, monkeypatch):
    monkeypatch.setenv("VCDM_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "rep"
    args = ["--preset", "tiny", "--scale", "0.5", "--seeds", "0", "--num-samples", "12", "--reference-size", "128",
            "--budgets", "1", "--no-progress", "--train-seeds", "3", "4"]  # fmt: skip
    run(parse(["bench", "quality", "--out", str(out), *args]))
    weights = []
    for ts in (3, 4):
        sub = out / f"train_seed_{ts}"
        assert (sub / "report.md").is_file() and (sub / "results.json").is_file()
        cfg = json.loads((sub / "config.json").read_text())
        assert {cfg[s]["train"]["seed"] for s in ("embedder", "prior", "decoder", "baseline")} == {ts}
        weights.append((sub / "two_stage" / "decoder" / "model.safetensors").read_bytes())
    assert weights[0] != weights[1]  # different training seeds train different models
    report = (out / "report.md").read_text()
    assert "2 training seeds" in report and "[report](train_seed_4/report.md)" in report
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["two_stage_vs_single"]["per_train_seed"]) == 2
    assert summary["rows"]["single"]["fid"]["n"] == 2
    # A rerun reuses both replicates.
    mtime = (out / "train_seed_3" / "single" / "baseline" / "model.json").stat().st_mtime_ns
    run(parse(["bench", "quality", "--out", str(out), *args]))
    assert (out / "train_seed_3" / "single" / "baseline" / "model.json").stat().st_mtime_ns == mtime


def test_with_train_seed_sets_every_stage_and_refuses_negatives():
    cfg = with_train_seed(preset("tiny"), 7)
    assert {
        cfg.embedder.train.seed,
        cfg.prior.train.seed,
        cfg.decoder.train.seed,
        cfg.baseline.train.seed,
    } == {7}
    assert cfg.eval == preset("tiny").eval  # the evaluation classifier is shared by every replicate
    with pytest.raises(VcdmError, match="training seeds"):
        run_quality_benchmark("unused", preset("tiny"), train_seeds=[1, 1])


def test_guidance_scan_reuses_the_trained_arms_and_reproduces_their_scores(bench, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "bench" / "quality_guidance.py"
    spec = importlib.util.spec_from_file_location("quality_guidance", path)
    qg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qg)
    mtime = (bench / "class" / "baseline" / "model.json").stat().st_mtime_ns
    assert qg.main(["--out", str(bench), "--weights", "1", "3"]) == 0
    assert (bench / "class" / "baseline" / "model.json").stat().st_mtime_ns == mtime  # nothing retrained
    text = (bench / "guidance.md").read_text().splitlines()
    assert len(text) == 2 + 1 + 3 * 2  # header, (a) at w = 1, three guided arms at two weights
    data = json.loads((bench / "results.json").read_text())
    rows = {(line.split("|")[1].strip(), line.split("|")[2].strip()): line.split("|") for line in text[2:]}
    # At w = 1 the scan redraws sample set 0 exactly as the benchmark did: the same FID.
    for arm in ARMS:
        fid = float(rows[(arm.title, "1")][3])
        assert fid == pytest.approx(data[f"final/{arm.key}/0"]["fid"], abs=0.01)
    scanned = {(r["arm"], r["w"]): r["fid"] for r in map(json.loads, capsys.readouterr().err.splitlines())}
    assert scanned[("(c) class-conditional", 3.0)] != scanned[("(c) class-conditional", 1.0)]  # guidance acts


def test_arms_option_runs_only_a_and_b_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("VCDM_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "ab"
    args = ["--preset", "tiny", "--scale", "0.5", "--seeds", "0", "--num-samples", "12", "--reference-size", "128",
            "--budgets", "1", "--no-progress", "--train-seeds", "3", "4", "--arms", "two_stage", "single"]  # fmt: skip
    run(parse(["bench", "quality", "--out", str(out), *args]))
    for ts in (3, 4):
        sub = out / f"train_seed_{ts}"
        assert sorted(p.name for p in sub.iterdir() if p.is_dir()) == ["single", "two_stage"]
        data = json.loads((sub / "results.json").read_text())
        assert data["params"]["arms"] == ["single", "two_stage"]
        assert not any(k.startswith(("final/class", "timing/class")) for k in data)
        report = (sub / "report.md").read_text()
        assert "(c) and (d) not run" in report and "nan%" not in report
        assert "![two_stage](samples_two_stage.png) |" in report and "samples_class" not in report
    summary = (out / "report.md").read_text()
    assert "(c) and (d) not run" in summary and "nan%" not in summary and "(c) FID" not in summary
    assert "class_two_stage_vs_class" not in json.loads((out / "summary.json").read_text())


def test_select_arms_names_the_allowed_values():
    assert [a.key for a in select_arms(["class", "single", "two_stage"])] == ["single", "two_stage", "class"]
    assert select_arms(None) == ARMS
    with pytest.raises(VcdmError, match="allowed: single, two_stage, class, class_two_stage"):
        select_arms(["single", "two_stage", "three_stage"])
    with pytest.raises(VcdmError, match="missing: two_stage"):
        select_arms(["single", "class"])


def test_emoji_splits_train_on_the_whole_training_split_and_hold_out_its_test_split(monkeypatch):
    from fake_data import blobs

    import vcdm.quality.benchmark as qb

    sets = {"train": blobs(40, seed=1), "test": blobs(30, seed=2)}
    monkeypatch.setattr(qb, "load_dataset", lambda d: sets[d.split])
    cfg = replace(preset("tiny"), data=replace(preset("tiny").data, source="emoji:google", channels=3))
    s = load_splits(cfg, num_sets=2, n=10, reference_size=25)
    assert torch.equal(s.train.images, sets["train"].images)  # nothing taken out of training
    assert len(s.reference) == 25 and len(s.heldout) == 20 and s.n == 10
    train_rows = {tuple(x.flatten().tolist()) for x in sets["train"].images}
    assert {tuple(x.flatten().tolist()) for x in s.reference.images} <= train_rows
    test_rows = {tuple(x.flatten().tolist()) for x in sets["test"].images}
    assert {tuple(x.flatten().tolist()) for x in s.heldout.images} <= test_rows
    assert torch.equal(load_splits(cfg, 2, 10, 25).heldout.images, s.heldout.images)  # a fixed choice


def test_a_clip_trained_embedder_is_trained_on_the_captions_and_gives_y(tmp_path, monkeypatch):
    """embedder.kind clip-trained: the benchmark trains the CLIP into (b)'s run before embedding, and y (the
    oracle's input too) is its image embeddings."""
    from fake_data import captioned_shapes
    from fake_runs import TEXT

    monkeypatch.setenv("VCDM_CACHE_DIR", str(tmp_path / "cache"))
    images, captions = captioned_shapes(120)
    labels = (np.arange(120) // 4) % 3  # the shape
    np.savez(tmp_path / "shapes.npz", images=images, labels=labels, captions=captions)
    clip = [s for s in TEXT if s.startswith(("clip.", "embedder."))]
    sets = [f"--set={s}" for s in [*clip, "data.image_size=16", "data.channels=3"]]
    args = ["--preset", "tiny", "--data", str(tmp_path / "shapes.npz"), "--scale", "0.25", "--seeds", "0",
            "--num-samples", "12", "--budgets", "1", "--no-progress", "--arms", "single", "two_stage", *sets]  # fmt: skip
    out = tmp_path / "q"
    run(parse(["bench", "quality", "--out", str(out), *args]))
    assert (out / "two_stage" / "clip" / "model.safetensors").is_file()
    assert not (out / "two_stage" / "embedder").exists()
    assert "| CLIP (embedder.kind clip-trained) |" in (out / "report.md").read_text()  # its training time
    data = json.loads((out / "results.json").read_text())
    assert math.isfinite(data["final/two_stage/0"]["fid"]) and math.isfinite(data["final/oracle/0"]["fid"])
    from vcdm.stages import load_embeddings

    assert load_embeddings(out / "two_stage").dim == 16  # clip.dim in TEXT (the tiny embedder's is 8)
