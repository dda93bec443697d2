"""SIGKILL a training run (once at an arbitrary moment, once in the middle of a checkpoint write), run the
same command again, and get bit-identical weights and losses to a run that was never interrupted."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from vcdm.training.checkpoint import list_training_states, load_training_state

ARGS = ["--preset", "tiny", "--no-progress", "--set", "baseline.train.total_nimg=384",
        "--set", "baseline.train.checkpoint_every_nimg=64", "--set", "baseline.train.precision=fp32"]  # fmt: skip

# Kill the process with SIGKILL when the second training state has been written and fsynced but not yet
# renamed into place: the state of a machine that dies during a checkpoint write.
KILL_IN_WRITE = """
import os, signal, sys
real_replace = os.replace
seen = []
def replace(src, dst):
    if os.path.basename(str(dst)).startswith("state-"):
        seen.append(dst)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
os.replace = replace
from vcdm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cmd(run: Path, script: str | None = None) -> list[str]:
    head = [sys.executable, "-c", script, "train"] if script else [sys.executable, "-m", "vcdm.cli", "train"]
    return [*head, "baseline", str(run), *ARGS]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}


def _final(run: Path):
    state = load_training_state(list_training_states(run / "baseline")[-1])
    return load_file(run / "baseline" / "model.safetensors"), state["extra"]["losses"]


def _assert_same(a, b):
    (wa, la), (wb, lb) = a, b
    assert torch.equal(la, lb)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigkill_anywhere_and_during_checkpoint_write_resume_bit_identically(tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(_cmd(ref), check=True, env=_env(), capture_output=True, timeout=300)
    reference = _final(ref)
    assert len(reference[1]) == 384 // 32

    # 1. killed in the middle of writing the second checkpoint
    run = tmp_path / "in_write"
    r = subprocess.run(_cmd(run, KILL_IN_WRITE), env=_env(), capture_output=True, timeout=300)
    assert r.returncode == -signal.SIGKILL
    ckpt_dir = run / "baseline" / "checkpoints"
    assert [p.name for p in list_training_states(run / "baseline")] == ["state-000000000064.safetensors"]
    assert any(p.name.endswith(".tmp") for p in ckpt_dir.iterdir())  # the half-done write, never renamed
    assert load_training_state(ckpt_dir / "state-000000000064.safetensors")["counters"]["nimg"] == 64
    subprocess.run(_cmd(run), check=True, env=_env(), capture_output=True, timeout=300)
    _assert_same(_final(run), reference)

    # 2. killed from outside at an arbitrary moment after the first checkpoint
    run = tmp_path / "anywhere"
    p = subprocess.Popen(_cmd(run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list_training_states(run / "baseline") and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    subprocess.run(_cmd(run), check=True, env=_env(), capture_output=True, timeout=300)
    _assert_same(_final(run), reference)


def test_sigterm_checkpoints_and_says_how_to_resume(tmp_path):
    run = tmp_path / "run"
    cmd = [*_cmd(run)]
    cmd[cmd.index("baseline.train.total_nimg=384")] = "baseline.train.total_nimg=100000"
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list_training_states(run / "baseline") and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM
    assert (
        "checkpoint written to" in err and "Run the same command again to resume: vcdm train baseline" in err
    )
    nimg = load_training_state(list_training_states(run / "baseline")[-1])["counters"]["nimg"]
    assert nimg > 64 and nimg % 32 == 0  # a fresh checkpoint at the step where the signal arrived
