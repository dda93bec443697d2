"""The per-model worker of `vcdm serve` on its own: order, failures, cancellation, forgetting old jobs."""

import threading
import time

import torch
from torch import nn

from vcdm.errors import VcdmError
from vcdm.serve import jobs


class Denoiser(nn.Module):
    def forward(self, x, sigma, cond=None):
        return x


class Holder:
    def __init__(self):
        self.denoiser = Denoiser()


def finish(job, timeout=10.0):
    end = time.monotonic() + timeout
    while job.finished is None:
        assert time.monotonic() < end
        time.sleep(0.01)
    return job


def test_jobs_run_in_order_and_report_failures(monkeypatch):
    monkeypatch.setattr(jobs, "KEEP_FINISHED", 2)
    holder, order = Holder(), []
    worker = jobs.Worker("m", lambda: [holder], max_queued=8)

    def work(i):
        def run(job):
            out = holder.denoiser(torch.zeros(2, 1, 4, 4), torch.ones(2), None)  # watched while the job runs
            order.append((i, type(holder.denoiser).__name__, job.calls))
            if i == 2:
                raise VcdmError("bad input")
            return [out]

        return run

    done = [finish(worker.submit("t", work(i), total_calls=1, preview_rows=1)) for i in range(4)]
    assert order == [(i, "Watched", 1) for i in range(4)] and type(holder.denoiser) is Denoiser
    assert [j.state for j in done] == ["done", "done", "failed", "done"] and done[2].error == "bad input"
    assert done[0].preview.shape == (1, 1, 4, 4) and done[0].progress == 1.0
    worker.submit("t", work(5), 1, 1)
    assert len(worker.jobs) <= 3  # the oldest finished jobs are forgotten
    worker.close()


def test_cancel_raises_inside_the_sampler_and_the_queue_refuses_beyond_its_bound():
    holder, started = Holder(), threading.Event()
    worker = jobs.Worker("m", lambda: [holder], max_queued=1)

    def spin(job):
        started.set()
        while True:
            holder.denoiser(torch.zeros(1, 1, 2, 2), torch.ones(1), None)

    running = worker.submit("spin", spin, 10, 1)
    assert started.wait(10)
    waiting = worker.submit("spin", spin, 10, 1)
    try:
        worker.submit("spin", spin, 10, 1)
        raise AssertionError("a third job was queued")
    except VcdmError as e:
        assert "already wait" in str(e)
    worker.cancel(waiting)
    worker.cancel(running)
    assert finish(running).state == "cancelled" and waiting.state == "cancelled" and waiting.calls == 0
    worker.close()
