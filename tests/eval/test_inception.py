import warnings

import pytest
import torch
from torch import Tensor, nn

from vcdm.errors import VcdmError
from vcdm.eval.features import FeatureExtractor, load_extractor
from vcdm.eval.inception import FIDInceptionV3, InceptionExtractor

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
