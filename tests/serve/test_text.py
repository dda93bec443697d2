"""`vcdm serve` on a text-conditioned run (the text tests' tiny CLIP -> text prior -> embedding+text decoder):
the page asks for a prompt, the sample carries it, and a request without one is refused."""

import io
import time

import pytest
from fake_data import captioned
from fake_runs import text_cfg

from vcdm import pngmeta
from vcdm.stages import compute_embeddings, train_stage

pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from vcdm.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    path, data, cfg = tmp_path_factory.mktemp("serve_text") / "captions", captioned(), text_cfg()
    train_stage("clip", path, cfg, data, progress=False)
    compute_embeddings(path, cfg, data, progress=False)
    for stage in ("prior", "decoder"):
        train_stage(stage, path, cfg, data, progress=False)
    return path


def test_a_text_run_samples_from_the_prompt_given(text_run):
    with TestClient(create_app([text_run])) as c:
        (info,) = c.get("/api/runs").json()
        assert info["prompt"] and info["stages"] == ["decoder"]
        refused = c.post("/api/runs/captions/sample", json={"num": 1})
        assert refused.status_code == 422 and "give a prompt" in refused.json()["error"]
        job = c.post("/api/runs/captions/sample", json={"num": 2, "prompt": "red", "num_steps": 2}).json()
        end = time.monotonic() + 60
        while job["state"] in ("queued", "running") and time.monotonic() < end:
            time.sleep(0.05)
            job = c.get(f"/api/jobs/{job['job']}").json()
        assert job["state"] == "done", job["error"]
        assert [r["params"]["prompt"] for r in job["results"]] == ["red"] * 2
        assert pngmeta.read(io.BytesIO(c.get(job["results"][0]["url"]).content).getvalue())["prompt"] == "red"
