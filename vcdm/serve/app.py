"""The web app of `vcdm serve`: one page (static/index.html) and a JSON API over the served runs.

Safe by default: the browser names runs, results and jobs by the ids the server gave out, never a path;
images come in as data URLs in the request body and stay in memory; every count, step number and upload size
is bounded (`Limits`) and a request over a bound is refused with a 4xx status and a one-line message
({"error": ...}). Each run has one worker (vcdm.serve.jobs): its jobs run one at a time, in order.

API (JSON in and out; images as PNG data URLs in, PNG files out):
    GET  /                              the page
    GET  /api/runs                      [run info]            GET /api/runs/{run}: with config and report
    POST /api/runs/{run}/sample         {stage, num, seed, num_steps, sampler, guidance, prior_num_steps,
                                         prior_sampler, prior_guidance, label, prompt} -> {job}
    POST /api/runs/{run}/upload         {image} -> a result (the image conformed to the run's image shape)
    POST /api/results/{id}/variations   {num, seed, num_steps, guidance} -> {job}
    POST /api/results/{id}/invert       {num_steps} -> {job}
    POST /api/results/{id}/upsample     {seed, num_steps, sampler} -> {job}
    POST /api/results/{id}/sdedit       {strength, num, seed, num_steps, sampler} -> {job}
    POST /api/results/{id}/inpaint      {mask, num, seed, num_steps} -> {job}  (mask: white = to fill)
    POST /api/interpolate               {a, b, frames, num_steps} -> {job}
    GET  /api/jobs/{id}                 state, progress, queue position, results
    GET  /api/jobs/{id}/preview.png     the latest x0_hat of a running job (204 before the first)
    POST /api/jobs/{id}/cancel
    GET  /api/results/{id}.png          the image, with its parameters in a PNG text chunk
    POST /api/png-params                {image} -> the parameters a vcdm PNG carries, and its run's name
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import itertools
import json
import math
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from vcdm import pngmeta
from vcdm.data.images import conform_image, make_grid, to_l_or_rgb, to_uint8
from vcdm.errors import VcdmError
from vcdm.samplers import SAMPLERS
from vcdm.serve.jobs import Job, Worker
from vcdm.serve.models import Sampling, ServedRun


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for."""

    max_images: int = 64  # images per job (num, frames)
    max_steps: int = 200  # sampling steps of any stage
    max_upload_bytes: int = 4 << 20  # request body (images come in it as data URLs)
    max_upload_pixels: int = 4096 * 4096  # width x height of an uploaded image, before it is conformed
    max_queued: int = 8  # jobs waiting per run
    max_results: int = 2000  # images kept in memory (the oldest go first)
    max_guidance: float = 20.0  # classifier-free weights in [0, max_guidance]
    max_prompt_chars: int = 500  # a prompt's length


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Results:
    """Images the server made or was given, by id, in memory (the oldest dropped beyond `limit`)."""

    def __init__(self, limit: int):
        self.limit, self.items, self._lock, self._ids = (
            limit,
            OrderedDict(),
            threading.Lock(),
            itertools.count(1),
        )

    def add(self, run: str, image: torch.Tensor, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            rid = f"r{next(self._ids)}"
            params = {**params, "id": rid}
            buffer = io.BytesIO()
            save_png_bytes(image, buffer)
            self.items[rid] = {"run": run, "image": image.float().cpu(), "params": params,
                               "png": pngmeta.with_params(buffer.getvalue(), params)}  # fmt: skip
            while len(self.items) > self.limit:
                self.items.popitem(last=False)
        return self.public(rid)

    def get(self, rid: str) -> dict[str, Any]:
        item = self.items.get(rid)
        if item is None:
            raise HTTPError(404, f"no result {rid!r} (results are kept in memory while the server runs)")
        return item

    def public(self, rid: str) -> dict[str, Any]:
        item = self.get(rid)
        return {"id": rid, "run": item["run"], "url": f"/api/results/{rid}.png", "params": item["params"]}


def save_png_bytes(image: torch.Tensor, buffer: io.BytesIO) -> None:
    """One (C, H, W) image, float in [-1, 1] or uint8, as PNG bytes, as vcdm.data.save_png writes it."""
    pixels = to_uint8(image[None])[0].numpy()
    Image.fromarray(pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0)).save(buffer, format="PNG")


def decode_image(data_url: Any, limits: Limits, what: str = "image") -> Image.Image:
    """A PNG / JPEG data URL (or bare base64) as a PIL image; 400 / 413 when it is not one or too large."""
    if not isinstance(data_url, str) or not data_url:
        raise HTTPError(400, f"{what}: expected an image as a data URL")
    try:
        raw = base64.b64decode(data_url.split(",", 1)[-1], validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, f"{what}: not valid base64") from None
    try:
        img = Image.open(io.BytesIO(raw))
    except (UnidentifiedImageError, OSError):
        raise HTTPError(400, f"{what}: not an image PIL can read") from None
    if img.width * img.height > limits.max_upload_pixels:
        raise HTTPError(
            413, f"{what}: {img.width}x{img.height} is more than {limits.max_upload_pixels} pixels"
        )
    img.load()
    return img


class Server:
    """The state behind the app: the runs, their workers, the results and the bounds."""

    def __init__(self, runs: list[ServedRun], limits: Limits):
        self.runs = {r.name: r for r in runs}
        self.limits = limits
        self.results = Results(limits.max_results)
        self.workers = {r.name: Worker(r.name, r.holders, limits.max_queued) for r in runs}

    # ---- request parsing and bounds ----

    def run(self, name: str) -> ServedRun:
        if name not in self.runs:
            raise HTTPError(404, f"no run {name!r}; this server has {sorted(self.runs)}")
        return self.runs[name]

    def job(self, jid: str) -> tuple[Job, Worker]:
        for worker in self.workers.values():
            if jid in worker.jobs:
                return worker.jobs[jid], worker
        raise HTTPError(404, f"no job {jid!r}")

    def integer(self, body: dict, key: str, default: int, lo: int, hi: int, what: str | None = None) -> int:
        value = body.get(key, default)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise HTTPError(400, f"{key} must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise HTTPError(422, f"{key} must be in [{lo}, {hi}]{what or ''}, got {int(value)}")
        return int(value)

    def number(self, body: dict, key: str, default: float, lo: float, hi: float) -> float:
        value = body.get(key, default)
        value = default if value is None else value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise HTTPError(400, f"{key} must be a number, got {value!r}")
        if not lo <= value <= hi:
            raise HTTPError(422, f"{key} must be in [{lo}, {hi}], got {value}")
        return float(value)

    def sampler(self, body: dict, key: str, default: str) -> str:
        value = body.get(key) or default
        if value not in SAMPLERS:
            raise HTTPError(422, f"{key} must be one of {sorted(SAMPLERS)}, got {value!r}")
        return value

    def steps(self, body: dict, key: str, default: int) -> int:
        return self.integer(body, key, default, 1, self.limits.max_steps, " (the server's bound on steps)")

    def count(self, body: dict, key: str = "num", default: int = 4, lo: int = 1) -> int:
        return self.integer(body, key, default, lo, self.limits.max_images, " (the server's bound on images)")

    def seed(self, body: dict) -> int:
        return self.integer(body, "seed", 0, 0, 2**31 - 1)

    def sampling(self, run: ServedRun, body: dict) -> Sampling:
        d = run.cfg.sample
        stage = body.get("stage") or next(iter(run.pipes))
        if stage not in run.pipes:
            raise HTTPError(422, f"stage must be one of {list(run.pipes)}, got {stage!r}")
        num_classes = run.info()["num_classes"]
        label = body.get("label")
        if label is not None:
            if num_classes == 0:
                raise HTTPError(422, f"run {run.name} is not class-conditional: give no label")
            label = self.integer(body, "label", 0, 0, num_classes - 1)
        prompt = body.get("prompt") or None
        text = run.pipes[stage].text_conditional
        if prompt is not None and (not isinstance(prompt, str) or len(prompt) > self.limits.max_prompt_chars):
            raise HTTPError(
                422, f"prompt must be a text of at most {self.limits.max_prompt_chars} characters"
            )
        if prompt is not None and not text:
            raise HTTPError(
                422, f"the {stage} stage of run {run.name} is not conditioned on text: give no prompt"
            )
        if prompt is None and text:
            raise HTTPError(422, f"the {stage} stage of run {run.name} is conditioned on text: give a prompt")
        g = self.limits.max_guidance
        return Sampling(stage, self.count(body), self.seed(body), self.steps(body, "num_steps", d.num_steps),
                        self.sampler(body, "sampler", d.sampler), self.number(body, "guidance", d.guidance, 0, g),
                        self.steps(body, "prior_num_steps", d.prior_num_steps),
                        self.sampler(body, "prior_sampler", d.prior_sampler),
                        self.number(body, "prior_guidance", d.prior_guidance, 0, g), label, prompt)  # fmt: skip

    def source(self, rid: str) -> tuple[ServedRun, torch.Tensor, dict[str, Any]]:
        item = self.results.get(rid)
        return self.run(item["run"]), item["image"], item["params"]

    def conform(self, run: ServedRun, img: Image.Image, shape: list[int] | None = None) -> torch.Tensor:
        """An image as (C, H, W) float32 in [-1, 1] at the run's image shape (or `shape`)."""
        c, h, _ = shape or run.info()["image_shape"]
        pixels = conform_image(to_l_or_rgb(img), h, c)  # uint8 (C, H, W)
        return torch.from_numpy(np.array(pixels)).float() / 127.5 - 1

    # ---- jobs ----

    def submit(self, run: ServedRun, kind: str, work, total_calls: int, rows: int) -> dict[str, Any]:
        def job_work(job: Job) -> list[str]:
            return [self.results.add(run.name, img, params)["id"] for img, params in work()]

        try:
            job = self.workers[run.name].submit(kind, job_work, total_calls, rows)
        except VcdmError as e:
            raise HTTPError(429, str(e)) from None
        return self.status(job)

    def status(self, job: Job) -> dict[str, Any]:
        worker = self.workers[job.id.rsplit("-", 1)[0]]
        return {"job": job.id, "kind": job.kind, "state": job.state, "progress": round(job.progress, 4),
                "position": worker.position(job), "error": job.error, "preview_version": job.preview_version,
                "results": [self.results.public(r) for r in job.results if r in self.results.items]}  # fmt: skip

    def preview(self, job: Job) -> bytes | None:
        if job.preview is None:
            return None
        buffer = io.BytesIO()
        save_png_bytes(make_grid(job.preview.clamp(-1, 1)), buffer)
        return buffer.getvalue()

    def close(self) -> None:
        for w in self.workers.values():
            w.close()


async def read_json(request: Request, limits: Limits) -> dict[str, Any]:
    """The request's JSON object; 413 beyond max_upload_bytes (read no further), 400 when not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_upload_bytes:
        raise HTTPError(413, f"the request is {int(declared)} bytes; the server takes at most "
                        f"{limits.max_upload_bytes}")  # fmt: skip
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_upload_bytes:
            raise HTTPError(413, f"the request is over {limits.max_upload_bytes} bytes, the server's bound")
        chunks.append(chunk)
    if not size:
        return {}
    try:
        body = json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPError(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the request body must be a JSON object")
    return body


def _routes(server: Server) -> list[Route]:
    lim = server.limits

    async def page(request: Request) -> Response:
        return HTMLResponse(resources.files("vcdm.serve").joinpath("static/index.html").read_text())

    async def runs(request: Request) -> Response:
        return JSONResponse([r.info() for r in server.runs.values()])

    async def run_info(request: Request) -> Response:
        return JSONResponse(server.run(request.path_params["run"]).info(full=True))

    async def sample(request: Request) -> Response:
        run = server.run(request.path_params["run"])
        req = server.sampling(run, await read_json(request, lim))
        rows = min(req.num, run.cfg.sample.batch_size)
        return JSONResponse(
            server.submit(run, "sample", lambda: run.sample(req), run.sample_calls(req), rows), 202
        )

    async def upload(request: Request) -> Response:
        run = server.run(request.path_params["run"])
        img = decode_image((await read_json(request, lim)).get("image"), lim)
        params = {pngmeta.KEY: pngmeta.__version__, "run": str(run.path), "edit": "upload"}
        return JSONResponse(server.results.add(run.name, server.conform(run, img), params), 201)

    async def edit(request: Request) -> Response:
        run, image, params = server.source(request.path_params["rid"])
        op, body = request.path_params["op"], await read_json(request, lim)
        d = run.cfg.sample
        if op == "variations":
            num, seed, steps = (
                server.count(body),
                server.seed(body),
                server.steps(body, "num_steps", d.num_steps),
            )
            g = server.number(body, "guidance", 1.0, 0, lim.max_guidance)
            work, calls, rows = lambda: run.variations(image, params, num, seed, steps, g), steps, num
        elif op == "invert":
            steps = server.steps(body, "num_steps", d.num_steps)
            work, calls, rows = lambda: run.invert(image, params, steps), 2 * steps, 1
        elif op == "upsample":
            if not run.has_upsampler:
                raise HTTPError(422, f"run {run.name} has no upsampler")
            seed, sampler = server.seed(body), server.sampler(body, "sampler", d.upsampler_sampler)
            steps = server.steps(body, "num_steps", d.upsampler_num_steps)
            work, calls, rows = lambda: run.upsample(image, params, seed, steps, sampler), steps, 1
            calls *= 2 if sampler == "heun" else 1
        elif op == "sdedit":
            strength = server.number(body, "strength", 0.6, 0, 1)
            num, seed, steps = (
                server.count(body),
                server.seed(body),
                server.steps(body, "num_steps", d.num_steps),
            )
            sampler = server.sampler(body, "sampler", "euler")
            work = lambda: run.sdedit(image, params, strength, num, seed, steps, sampler)  # noqa: E731
            calls, rows = steps, num
        elif op == "inpaint":
            img = decode_image(body.get("mask"), lim, "mask")
            mask = server.conform(run, img, [1, *image.shape[1:]])[:1] > 0  # white (> mid-grey) = to fill
            num, seed, steps = (
                server.count(body),
                server.seed(body),
                server.steps(body, "num_steps", d.num_steps),
            )
            work = lambda: run.inpaint(image, mask.float(), params, num, seed, steps)  # noqa: E731
            calls, rows = 2 * steps, num
        else:
            raise HTTPError(404, f"no edit {op!r}; edits are variations, invert, upsample, sdedit, inpaint")
        return JSONResponse(server.submit(run, op, work, calls, rows), 202)

    async def interpolate(request: Request) -> Response:
        body = await read_json(request, lim)
        (run, a, pa), (run_b, b, pb) = server.source(str(body.get("a"))), server.source(str(body.get("b")))
        if run_b is not run or a.shape != b.shape:
            raise HTTPError(422, "interpolation needs two images of the same run and size")
        frames = server.count(body, "frames", 8, lo=2)
        steps = server.steps(body, "num_steps", run.cfg.sample.num_steps)
        work = lambda: run.interpolate(a, b, (pa, pb), frames, steps)  # noqa: E731
        return JSONResponse(server.submit(run, "interpolate", work, 3 * steps, frames), 202)

    async def job_status(request: Request) -> Response:
        return JSONResponse(server.status(server.job(request.path_params["jid"])[0]))

    async def job_preview(request: Request) -> Response:
        png = server.preview(server.job(request.path_params["jid"])[0])
        return Response(status_code=204) if png is None else Response(png, media_type="image/png")

    async def job_cancel(request: Request) -> Response:
        job, worker = server.job(request.path_params["jid"])
        worker.cancel(job)
        return JSONResponse(server.status(job))

    async def result_png(request: Request) -> Response:
        item = server.results.get(request.path_params["rid"])
        name = f"{item['run']}-{item['params']['id']}.png"
        return Response(item["png"], media_type="image/png",
                        headers={"Content-Disposition": f'inline; filename="{name}"'})  # fmt: skip

    async def png_params(request: Request) -> Response:
        raw = (await read_json(request, lim)).get("image")
        decode_image(raw, lim)  # an image within bounds
        try:
            meta = pngmeta.read(base64.b64decode(str(raw).split(",", 1)[-1]))
        except VcdmError as e:
            raise HTTPError(422, str(e)) from None
        run = next((r.name for r in server.runs.values() if str(r.path) == meta.get("run")), None)
        return JSONResponse({"params": meta, "run": run})

    return [
        Route("/", page),
        Route("/api/runs", runs),
        Route("/api/runs/{run}", run_info),
        Route("/api/runs/{run}/sample", sample, methods=["POST"]),
        Route("/api/runs/{run}/upload", upload, methods=["POST"]),
        Route("/api/results/{rid}.png", result_png),
        Route("/api/results/{rid}/{op}", edit, methods=["POST"]),
        Route("/api/interpolate", interpolate, methods=["POST"]),
        Route("/api/jobs/{jid}", job_status),
        Route("/api/jobs/{jid}/preview.png", job_preview),
        Route("/api/jobs/{jid}/cancel", job_cancel, methods=["POST"]),
        Route("/api/png-params", png_params, methods=["POST"]),
    ]


def create_app(
    runs: list[str | Path], limits: Limits | None = None, device: torch.device | str = "cpu"
) -> Starlette:
    """The `vcdm serve` app for run directories (loaded now; names are the directory names, made unique).

    Returns a Starlette app; app.state.server is the `Server` (its workers stop on shutdown).
    """
    limits = limits or Limits()
    served, names = [], set()
    for path in runs:
        name = base = Path(path).resolve().name
        for i in itertools.count(2):
            if name not in names:
                break
            name = f"{base}-{i}"
        names.add(name)
        served.append(ServedRun(path, name, device))
    server = Server(served, limits)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status if isinstance(exc, HTTPError) else 422
        return JSONResponse({"error": str(exc)}, status_code=status)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        server.close()

    app = Starlette(routes=_routes(server), exception_handlers={HTTPError: http_error, VcdmError: http_error},
                    lifespan=lifespan)  # fmt: skip
    app.state.server = server
    return app
