"""Jobs of `vcdm serve`: one worker thread per model runs its queue one job at a time; a job reports progress
and a live x0_hat preview, and stops at its next denoiser call once cancelled.

The pipeline calls the samplers itself (vcdm.pipeline.sample_stage), so the job reaches the sampling loop
through the denoisers: while a job runs, each denoiser of its model is replaced by `Watched`, which counts
the call, keeps the denoised batch as the preview and raises `Cancelled` when the job was cancelled. A
cancelled job therefore leaves the sampler within one network evaluation and the worker goes on to the next.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from vcdm.errors import VcdmError

STATES = ("queued", "running", "done", "cancelled", "failed")
KEEP_FINISHED = (
    200  # finished jobs a worker remembers (their status and preview); their results stay in Results
)


class Cancelled(Exception):
    """Raised inside a job's sampler when the job was cancelled."""


@dataclass
class Job:
    """One request: `work(job)` runs on the model's worker thread and returns the job's results.

    Attributes:
        id: a short unique name. kind: "sample", "variations", ...; total_calls: the denoiser calls the job
            is expected to make (progress is calls / total_calls, capped below 1 until it is done).
        preview_rows: how many rows of a denoised batch the preview keeps (the job's images; the rest of a
            guided batch is its unconditional half).
    """

    id: str
    kind: str
    work: Callable[[Job], list[Any]]
    total_calls: int = 1
    preview_rows: int = 1
    state: str = "queued"
    calls: int = 0
    error: str | None = None
    results: list[Any] = field(default_factory=list)
    preview: Tensor | None = None
    preview_version: int = 0
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)

    @property
    def progress(self) -> float:
        if self.state == "done":
            return 1.0
        return min(self.calls / max(self.total_calls, 1), 0.99)

    def check(self) -> None:
        """Raise Cancelled when the job was cancelled."""
        if self.cancel_event.is_set():
            raise Cancelled

    def observe(self, denoised: Tensor) -> None:
        """Count one denoiser call and keep its image rows (B, C, H, W) as the preview."""
        self.calls += 1
        if denoised.ndim == 4 and denoised.shape[1] in (1, 3):
            self.preview = denoised[: self.preview_rows].detach().float().cpu()
            self.preview_version += 1


class Watched(nn.Module):
    """A denoiser that reports each call to the running job (`Job.observe`) and stops a cancelled one."""

    def __init__(self, inner: nn.Module, job: Job):
        super().__init__()
        self.inner, self.job = inner, job

    def forward(self, x: Tensor, sigma: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        self.job.check()
        out = self.inner(x, sigma, cond)
        self.job.observe(out)
        return out


@contextlib.contextmanager
def watching(holders: list[Any], job: Job) -> Iterator[None]:
    """Replace the `denoiser` attribute of each holder (pipeline components, a PaletteModel) by `Watched`
    for the duration of a job; restored afterwards whatever happens."""
    saved = [(h, h.denoiser) for h in holders]
    for h, d in saved:
        h.denoiser = Watched(d, job)
    try:
        yield
    finally:
        for h, d in saved:
            h.denoiser = d


class Worker:
    """One model's queue and the thread that runs it, one job at a time.

    Args:
        name: the model's name (for messages). holders: what `watching` wraps while a job runs (a callable
            returning them, since models load lazily). max_queued: jobs waiting at most; more are refused.
    """

    _ids = itertools.count(1)

    def __init__(self, name: str, holders: Callable[[], list[Any]], max_queued: int):
        self.name, self.holders, self.max_queued = name, holders, max_queued
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.jobs: dict[str, Job] = {}
        self.current: Job | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"vcdm-serve-{name}", daemon=True)
        self._thread.start()

    def waiting(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.state == "queued"]

    def submit(self, kind: str, work: Callable[[Job], list[Any]], total_calls: int, preview_rows: int) -> Job:
        """Queue a job; VcdmError when max_queued jobs already wait."""
        with self._lock:
            if len(self.waiting()) >= self.max_queued:
                raise VcdmError(
                    f"{self.max_queued} jobs already wait for {self.name}; try again when one is done"
                )
            job = Job(f"{self.name}-{next(self._ids)}", kind, work, max(total_calls, 1), max(preview_rows, 1))
            finished = [j.id for j in self.jobs.values() if j.finished is not None]
            for old in finished[: max(len(finished) - KEEP_FINISHED, 0)]:  # forget the oldest finished jobs
                del self.jobs[old]
            self.jobs[job.id] = job
            self.queue.put(job)
        return job

    def position(self, job: Job) -> int:
        """How many jobs run or wait before this one (0 when it runs)."""
        if job.state != "queued":
            return 0
        ahead = [j for j in self.waiting() if j.created < job.created]
        return len(ahead) + (self.current is not None)

    def cancel(self, job: Job) -> None:
        """Cancel a job: a queued one never starts, a running one stops at its next denoiser call."""
        job.cancel_event.set()
        with self._lock:
            if job.state == "queued":
                job.state, job.finished = "cancelled", time.monotonic()

    def close(self) -> None:
        """Cancel everything and stop the thread (after the job that runs)."""
        for job in list(self.jobs.values()):
            self.cancel(job)
        self.queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while (job := self.queue.get()) is not None:
            with self._lock:
                if job.state != "queued":
                    continue
                job.state, job.started, self.current = "running", time.monotonic(), job
            try:
                with watching(self.holders(), job):
                    results = job.work(job)
                job.results, job.state = results, "done"
            except Cancelled:
                job.state = "cancelled"
            except VcdmError as e:
                job.state, job.error = "failed", str(e)
            except Exception as e:  # a bug: reported on the job, the server keeps running
                job.state, job.error = "failed", f"{type(e).__name__}: {e}"
                traceback.print_exc()
            finally:
                job.finished, self.current = time.monotonic(), None
