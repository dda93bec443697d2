"""`vcdm serve` through Starlette's test client: every endpoint, every bound, a cancelled job."""

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

from vcdm import pngmeta
from vcdm.config import SampleConfig
from vcdm.data.images import to_uint8
from vcdm.pipeline import Pipeline

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from vcdm.serve import Limits, create_app  # noqa: E402

LIMITS = Limits(
    max_images=8, max_steps=50, max_upload_bytes=64 << 10, max_upload_pixels=256 * 256, max_queued=2
)


def data_url(img: Image.Image) -> str:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def wait(client, job: dict, timeout: float = 60.0) -> dict:
    """Poll a job until it leaves queued / running."""
    end = time.monotonic() + timeout
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < end, f"job {job['job']} still {job['state']} after {timeout} s"
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['job']}").json()
    return job


@pytest.fixture(scope="module")
def client(mnist_run, cascade_run):
    with TestClient(create_app([mnist_run, cascade_run], LIMITS)) as c:
        yield c


def png(client, result) -> Image.Image:
    r = client.get(result["url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(r.content))


def run_job(client, path, body, n):
    r = client.post(path, json=body)
    assert r.status_code == 202, r.text
    job = wait(client, r.json())
    assert job["state"] == "done", job
    assert job["progress"] == 1 and len(job["results"]) == n
    return job["results"]


def test_page_and_run_info(client):
    page = client.get("/")
    assert (
        page.status_code == 200 and "<script>" in page.text and "http" not in page.text.split("<script>")[1]
    )
    mnist, blobs = client.get("/api/runs").json()
    assert mnist["name"] == "mnist" and mnist["stages"] == ["decoder", "baseline"] and mnist["editing"]
    assert mnist["image_shape"] == [1, 28, 28] and not mnist["upsampler"] and not mnist["palette"]
    assert blobs["name"] == "blobs" and blobs["image_shape"] == [3, 8, 8] and blobs["upsampler"]
    assert blobs["editing"]  # its embedder takes 16x16 images, its decoder makes 8x8 ones: embed() resizes
    full = client.get("/api/runs/blobs").json()
    assert full["config"]["decoder"]["image_size"] == 8 and "report" in full


def test_sample_matches_the_library_and_carries_parameters(client, mnist_run):
    body = {
        "num": 3,
        "seed": 5,
        "num_steps": 3,
        "sampler": "euler",
        "prior_num_steps": 3,
        "prior_sampler": "euler",
    }
    results = run_job(client, "/api/runs/mnist/sample", body, 3)
    cfg = SampleConfig(num_steps=3, sampler="euler", prior_num_steps=3, prior_sampler="euler")
    want = to_uint8(Pipeline.from_run(mnist_run, "decoder")([5, 6, 7], cfg).images)
    for result, seed, image in zip(results, [5, 6, 7], want):
        assert result["params"]["seed"] == seed and result["params"]["num_steps"] == 3
        got = np.asarray(png(client, result))
        assert np.array_equal(got, image[0].numpy())  # gray
    raw = client.get(results[1]["url"]).content
    assert pngmeta.read(raw)["seed"] == 6
    dropped = client.post("/api/png-params", json={"image": base64.b64encode(raw).decode()}).json()
    assert dropped["run"] == "mnist" and dropped["params"]["sampler"] == "euler"
    # the baseline stage too
    assert run_job(client, "/api/runs/mnist/sample", {"stage": "baseline", "num": 1, "num_steps": 2}, 1)


def test_edits_on_an_upload(client):
    rng = np.random.default_rng(1)
    noise = Image.fromarray(rng.integers(0, 255, (40, 48, 3), np.uint8))
    up = client.post("/api/runs/mnist/upload", json={"image": data_url(noise)})
    assert up.status_code == 201 and png(client, up.json()).size == (28, 28)
    rid = up.json()["id"]
    variations = run_job(client, f"/api/results/{rid}/variations", {"num": 2, "seed": 3, "num_steps": 3}, 2)
    assert [v["params"]["edit"] for v in variations] == ["variations"] * 2
    assert variations[0]["params"]["source"] == rid
    (recon,) = run_job(client, f"/api/results/{rid}/invert", {"num_steps": 4}, 1)
    assert isinstance(recon["params"]["psnr"], float)
    body = {"a": rid, "b": variations[0]["id"], "frames": 3, "num_steps": 3}
    frames = run_job(client, "/api/interpolate", body, 3)
    assert [f["params"]["frame"] for f in frames] == [0, 1, 2]
    run_job(client, f"/api/results/{rid}/sdedit", {"num": 2, "strength": 0.5, "num_steps": 4}, 2)
    mask = np.zeros((256, 256), np.uint8)
    mask[:128] = 255  # the top half is filled in
    body = {"num": 2, "num_steps": 3, "mask": data_url(Image.fromarray(mask))}
    filled = run_job(client, f"/api/results/{rid}/inpaint", body, 2)
    source, out = np.asarray(png(client, up.json())), np.asarray(png(client, filled[0]))
    assert np.array_equal(out[15:], source[15:]) and not np.array_equal(out[:13], source[:13])
    assert filled[0]["params"]["method"] == "repaint"
    # editing works on the cascade's base decoder too (its embedder reads another size); upsampling on mnist is
    # refused
    small = client.post("/api/runs/blobs/upload", json={"image": data_url(noise)}).json()
    varied = run_job(client, f"/api/results/{small['id']}/variations", {"num": 1, "num_steps": 2}, 1)
    assert png(client, varied[0]).size == (8, 8)
    assert client.post(f"/api/results/{rid}/upsample", json={}).status_code == 422


def test_upsample_a_sample_of_the_cascade(client):
    (base,) = run_job(client, "/api/runs/blobs/sample", {"num": 1, "num_steps": 2, "prior_num_steps": 2}, 1)
    (big,) = run_job(client, f"/api/results/{base['id']}/upsample", {"seed": 1, "num_steps": 2}, 1)
    assert png(client, base).size == (8, 8) and png(client, big).size == (16, 16)
    assert big["params"]["edit"] == "upsample" and big["params"]["source"] == base["id"]


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/api/runs/mnist/sample", {"num": 0}, 422, "num must be in [1, 8]"),
        ("/api/runs/mnist/sample", {"num": 9}, 422, "the server's bound on images"),
        ("/api/runs/mnist/sample", {"num_steps": 51}, 422, "num_steps must be in [1, 50]"),
        ("/api/runs/mnist/sample", {"prior_num_steps": 1000}, 422, "the server's bound on steps"),
        ("/api/runs/mnist/sample", {"num": "4"}, 400, "num must be an integer"),
        ("/api/runs/mnist/sample", {"seed": -1}, 422, "seed must be in"),
        ("/api/runs/mnist/sample", {"sampler": "magic"}, 422, "sampler must be one of"),
        ("/api/runs/mnist/sample", {"guidance": 1e9}, 422, "guidance must be in"),
        ("/api/runs/mnist/sample", {"stage": "palette"}, 422, "stage must be one of"),
        ("/api/runs/mnist/sample", {"label": 1}, 422, "not class-conditional"),
        ("/api/runs/mnist/sample", {"prompt": "a seven"}, 422, "not conditioned on text"),
        ("/api/runs/mnist/sample", {"prompt": 7}, 422, "prompt must be a text"),
        ("/api/runs/nope/sample", {}, 404, "no run 'nope'"),
        ("/api/runs/mnist/upload", {"image": "data:image/png;base64,@@@"}, 400, "not valid base64"),
        ("/api/runs/mnist/upload", {"image": base64.b64encode(b"hello").decode()}, 400, "not an image"),
        ("/api/runs/mnist/upload", {}, 400, "expected an image"),
        ("/api/results/r999999/variations", {}, 404, "no result"),
        ("/api/interpolate", {"a": "x", "b": "y"}, 404, "no result"),
        ("/api/png-params", {"image": data_url(Image.new("L", (4, 4)))}, 422, "carries no vcdm parameters"),
    ],
)
def test_bounds_are_refused_with_a_message(client, path, body, status, message):
    r = client.post(path, json=body)
    assert r.status_code == status and message in r.json()["error"], r.text


def test_size_bounds_and_unknown_ids(client):
    big = client.post(
        "/api/runs/mnist/upload",
        content=b"{" + b" " * (70 << 10) + b"}",
        headers={"content-type": "application/json"},
    )
    assert big.status_code == 413 and "bytes" in big.json()["error"]
    wide = client.post("/api/runs/mnist/upload", json={"image": data_url(Image.new("L", (300, 300)))})
    assert wide.status_code == 413 and "pixels" in wide.json()["error"]
    bad = client.post("/api/runs/mnist/sample", content=b"[1", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.get("/api/results/nope.png").status_code == 404
    up = client.post("/api/runs/mnist/upload", json={"image": data_url(Image.new("RGB", (8, 8)))}).json()
    assert client.post(f"/api/results/{up['id']}/explode", json={}).status_code == 404
    assert client.post(f"/api/results/{up['id']}/interpolate", json={}).status_code == 404


def test_cancel_stops_a_running_job_and_the_queue_goes_on(mnist_run):
    with TestClient(create_app([mnist_run], Limits(max_steps=100_000, max_queued=2))) as c:
        body = {
            "num": 1,
            "num_steps": 100_000,
            "sampler": "euler",
            "prior_num_steps": 1,
            "prior_sampler": "euler",
        }
        long = c.post("/api/runs/mnist/sample", json=body).json()
        queued = c.post("/api/runs/mnist/sample", json=body).json()
        third = c.post("/api/runs/mnist/sample", json={"num": 1, "num_steps": 2}).json()
        full = c.post("/api/runs/mnist/sample", json={"num": 1, "num_steps": 2})
        assert full.status_code == 429 and "already wait" in full.json()["error"]
        end = time.monotonic() + 30
        while (s := c.get(f"/api/jobs/{long['job']}").json())["progress"] == 0 or c.get(
            f"/api/jobs/{long['job']}/preview.png"
        ).status_code != 200:
            assert time.monotonic() < end
            time.sleep(0.05)
        assert s["state"] == "running" and 0 < s["progress"] < 0.99
        assert c.get(f"/api/jobs/{queued['job']}").json()["position"] == 1
        assert c.post(f"/api/jobs/{queued['job']}/cancel").json()["state"] == "cancelled"  # never starts
        c.post(f"/api/jobs/{long['job']}/cancel")
        assert wait(c, s)["state"] == "cancelled"
        server = c.app.state.server
        job = server.workers["mnist"].jobs[long["job"]]
        calls = job.calls
        assert wait(c, third)["state"] == "done"
        time.sleep(0.3)
        assert job.calls == calls and server.workers["mnist"].current is None  # nothing runs
        assert server.workers["mnist"].jobs[queued["job"]].calls == 0
        assert all(type(h.denoiser).__name__ != "Watched" for h in server.runs["mnist"].holders())
