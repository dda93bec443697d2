"""Measure `vcdm serve` on this CPU: time from the Sample click (the POST) to the first x0_hat preview and to
16 finished images, and the server's memory (RSS) with the run loaded and after the job.

    python docs/serve/measure.py RUN [--num 16] [--port 8765]

With --make-demo-sized, RUN is first trained with the mnist (demo) preset's networks on a budget of 64 images
per stage: the networks and sampling settings are the demo's, the weights are not (timings do not depend on
them). Prints one JSON line.
"""

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def rss_mib(pid: int) -> dict[str, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--num", type=int, default=16)
    ap.add_argument("--make-demo-sized", action="store_true")
    args = ap.parse_args()
    vcdm = [str(Path(sys.executable).with_name("vcdm"))]
    if args.make_demo_sized and not (Path(args.run) / "decoder").is_dir():
        budget = [f"--set={s}.train.total_nimg=64" for s in ("embedder", "prior", "decoder")]
        common = [args.run, "--preset", "mnist", "--no-progress", *budget]
        subprocess.run([*vcdm, "train", "embedder", *common], check=True)
        subprocess.run([*vcdm, "embed", args.run, "--no-progress"], check=True)
        for stage in ("prior", "decoder"):
            subprocess.run([*vcdm, "train", stage, args.run, "--no-progress"], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t_start = time.perf_counter()
    proc = subprocess.Popen([*vcdm, "serve", args.run, "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=600) as c:
            while True:
                try:
                    info = c.get("/api/runs").json()[0]
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            t_ready = time.perf_counter() - t_start
            loaded = rss_mib(proc.pid)
            d = info["defaults"]
            t0 = time.perf_counter()
            job = c.post(f"/api/runs/{info['name']}/sample", json={"num": args.num, "seed": 0}).json()
            first = None
            while job["state"] in ("queued", "running"):
                if first is None and job["preview_version"] > 0:
                    first = time.perf_counter() - t0
                time.sleep(0.02)
                job = c.get(f"/api/jobs/{job['job']}").json()
            done = time.perf_counter() - t0
            assert job["state"] == "done", job
            after = rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps({"run": info["name"], "image_shape": info["image_shape"], "num": args.num,
                      "sampler": d["sampler"], "num_steps": d["num_steps"], "prior_sampler": d["prior_sampler"],
                      "prior_num_steps": d["prior_num_steps"], "ready_s": round(t_ready, 2),
                      "first_preview_s": round(first, 3) if first else None, "done_s": round(done, 2),
                      "rss_loaded_mib": round(loaded["VmRSS"], 1), "rss_after_mib": round(after["VmRSS"], 1),
                      "rss_peak_mib": round(after["VmHWM"], 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
