"""The same `vcdm train` / `vcdm sample` under torchrun with 2 CPU processes (gloo) as in one process."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

TINY = ["--preset", "tiny", "--no-progress", "--set", "baseline.train.micro_batches=2",
        "--set", "baseline.train.precision=fp32", "--set", "baseline.train.total_nimg=128"]  # fmt: skip


def _vcdm(args, nproc=1, cwd=None):
    if nproc == 1:
        cmd = [sys.executable, "-m", "vcdm.cli", *args]
    else:
        # "--" stops torchrun from reading vcdm's options as abbreviations of its own (--num -> --numa-binding)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "vcdm.cli", "--", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    _vcdm(["train", "baseline", str(root / "one"), *TINY])
    _vcdm(["train", "baseline", str(root / "two"), *TINY], nproc=2)
    return root


def test_two_process_training_matches_one_process(runs):
    a = load_file(runs / "one" / "baseline" / "model.safetensors")
    b = load_file(runs / "two" / "baseline" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), k


def test_two_process_sampling_writes_the_same_images(runs):
    run = str(runs / "one")
    common = ["sample", run, "--stage", "baseline", "--num", "5", "--steps", "3", "--no-progress"]
    _vcdm([*common, "--out", str(runs / "s1")])
    _vcdm([*common, "--out", str(runs / "s2")], nproc=2)
    names = sorted(p.name for p in Path(runs / "s1").iterdir())
    assert names == sorted(p.name for p in Path(runs / "s2").iterdir()) and len(names) == 6
    for n in names:
        a = np.asarray(Image.open(runs / "s1" / n), dtype=np.int16)
        b = np.asarray(Image.open(runs / "s2" / n), dtype=np.int16)
        assert np.abs(a - b).max() <= 1, n  # same seeds; at most a rounding step from BLAS batch layout
