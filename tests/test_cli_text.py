"""One tiny text-to-image run through the CLI on a small captioned .npz made here (coloured shapes named by their
colour and shape; no download): `vcdm train clip`, `vcdm embed` with the CLIP's image tower, the text prior and
the embedding+text decoder; then `vcdm sample --prompt` / `--prompts-file`, --from-png, and the one-line errors
on prompts."""

import numpy as np
import pytest
from fake_data import captioned_shapes
from PIL import Image

from vcdm import pngmeta
from vcdm.cli import main

SETS = [
    "--set=data.image_size=16", "--set=data.limit=48", "--set=clip.image_size=null",
    "--set=clip.image.channels=[8,16]", "--set=clip.image.width=32", "--set=clip.text.width=32",
    "--set=clip.text.depth=1", "--set=clip.text.heads=2", "--set=clip.text.vocab_size=300",
    "--set=clip.text.context_length=24", "--set=clip.dim=16", "--set=clip.train.total_nimg=64",
    "--set=clip.train.batch_size=16", "--set=embedder.kind=clip-trained", "--set=prior.condition=text",
    "--set=decoder.condition=embedding+text", "--set=prior.train.total_nimg=64",
    "--set=decoder.train.total_nimg=32", "--set=sample.batch_size=8",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_cli")
    images, captions = captioned_shapes()
    np.savez(root / "shapes.npz", images=images, captions=captions)
    run = root / "run"
    data = f"--set=data.source={root / 'shapes.npz'}"
    assert main(["train", "clip", str(run), "--preset", "tiny", "--no-progress", data, *SETS]) == 0
    assert main(["embed", str(run), "--no-progress"]) == 0
    for stage in ("prior", "decoder"):
        assert main(["train", stage, str(run), "--no-progress"]) == 0
    return run


def test_sample_prompts_writes_a_row_per_prompt_and_records_each_prompt(run, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# seen and unseen\nred heart\n\n  smiling cat face  \n")
    out = tmp_path / "out"
    argv = ["sample", str(run), "--prompt", "dog face", "--prompts-file", str(prompts), "--num", "2", "--seed",
            "3", "--steps", "2", "--prior-steps", "2", "--prior-candidates", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid.png", "p000-000003.png", "p000-000004.png", "p001-000003.png", "p001-000004.png",
                     "p002-000003.png", "p002-000004.png", "prompts.txt"]  # fmt: skip
    assert (out / "prompts.txt").read_text() == "p000\tdog face\np001\tred heart\np002\tsmiling cat face\n"
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (2 * 18 + 2, 3 * 18 + 2)  # 2 per row, a row per prompt
    meta = pngmeta.read(out / "p002-000004.png")
    assert meta["prompt"] == "smiling cat face" and meta["seed"] == 4 and meta["prior_candidates"] == 2
    assert "3 prompt(s)" in capsys.readouterr().out
    # a sample depends only on (prompt, seed): drawn alone, with another first seed, it is the same image
    again = tmp_path / "again"
    assert main(["sample", str(run), "--prompt", "smiling cat face", "--num", "1", "--seed", "4", "--steps", "2",
                 "--prior-steps", "2", "--prior-candidates", "2", "--out", str(again), "--no-progress"]) == 0  # fmt: skip
    assert (again / "p000-000004.png").read_bytes() == (out / "p002-000004.png").read_bytes()
    # --from-png redraws it with its prompt
    redraw = tmp_path / "redraw"
    assert (
        main(["sample", "--from-png", str(out / "p002-000004.png"), "--out", str(redraw), "--no-progress"])
        == 0
    )
    assert (redraw / "p000-000004.png").read_bytes() == (out / "p002-000004.png").read_bytes()


@pytest.mark.parametrize(
    ("extra", "message"),
    [([], "is conditioned on text: give --prompt"), (["--prompt", " "], "empty prompt"),
     (["--prompt", "red heart " * 20], "the text tower takes at most 24"),
     (["--prompts-file", "/nonexistent/p.txt"], "prompts file not found"),
     (["--prompt", "red heart", "--label", "1"], "--label does not apply")],
)  # fmt: skip
def test_bad_prompts_are_one_line_errors(run, tmp_path, capsys, extra, message):
    argv = ["sample", str(run), "--num", "1", "--steps", "2", "--out", str(tmp_path / "x"), "--no-progress"]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_edit_text_diff_writes_a_row_of_rotations(run, tmp_path, capsys):
    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image)
    out = tmp_path / "edit"
    argv = ["edit", "text-diff", str(run), str(image), "--from", "red heart", "--to", "blue heart",
            "--strengths", "0", "0.3", "--steps", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00_in_theta0.00.png", "00_in_theta0.30.png", "grid.png"]
    assert "text-diff edits" in capsys.readouterr().out
    assert main(argv[:-1] + [str(tmp_path / "e2"), "--to", ""]) == 2
    assert "empty prompt" in capsys.readouterr().err


def test_clip_guidance_toward_a_caption_with_the_trained_clip(run, tmp_path):
    # the run's embedder is its trained CLIP (embedder.kind=clip-trained): --clip-target-text uses its text tower
    base = ["sample", str(run), "--prompt", "red disc", "--num", "1", "--steps", "3", "--prior-steps", "2",
            "--no-progress"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "guided"), "--clip-scale", "50", "--clip-target-text",
                 "blue square"]) == 0  # fmt: skip
    plain = np.asarray(Image.open(tmp_path / "plain" / "p000-000000.png"), np.float32)
    guided = np.asarray(Image.open(tmp_path / "guided" / "p000-000000.png"), np.float32)
    assert plain.shape == guided.shape and np.abs(plain - guided).mean() > 0.5


def test_text_demo_draws_a_row_per_prompt(tmp_path):
    images, captions = captioned_shapes()
    np.savez(tmp_path / "shapes.npz", images=images, captions=captions)
    out = tmp_path / "demo"
    argv = ["demo", "--preset", "tiny", "--out", str(out), "--no-progress", f"--set=data.source={tmp_path / 'shapes.npz'}",
            *SETS, '--set=demo.stages=["clip", "prior", "decoder"]', '--set=demo.prompts=["red disc", "blue square"]',
            "--set=sample.num_steps=2", "--set=sample.prior_num_steps=2"]  # fmt: skip
    assert main(argv) == 0
    with Image.open(out / "two_stage.png") as grid:
        assert grid.size == (8 * 18 + 2, 2 * 18 + 2)  # a row of 8 seeds per prompt
    report = (out / "report.md").read_text()
    assert "| clip | CLIP on (image, caption) pairs |" in report
    bad = [a for a in argv if not a.startswith("--set=demo.prompts")] + ["--set=demo.prompts=[]"]
    bad[bad.index(str(out))] = str(tmp_path / "demo2")
    assert main(bad) == 2  # a text-conditioned run needs prompts
