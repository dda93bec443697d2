"""bench/peer_diffusers.py's helpers: the architecture match, the round order, the timing window, the summary,
and the one-line error without diffusers (the parts that build a UNet2DModel skip without diffusers)."""

import sys

import pytest
import torch

from vcdm.errors import VcdmError
from vcdm.networks import UNet, UNetConfig


@pytest.fixture(scope="module")
def peer(load_bench):
    return load_bench("peer_diffusers")


def test_unet2d_kwargs_follow_the_vcdm_config(peer):
    kw = peer.unet2d_kwargs(peer.VcdmArm.demo().net)
    assert kw["block_out_channels"] == (16, 32, 64)
    assert kw["layers_per_block"] == 1
    assert kw["down_block_types"] == ("DownBlock2D",) * 3 and kw["up_block_types"] == ("UpBlock2D",) * 3
    assert kw["add_attention"] is False
    assert kw["norm_num_groups"] == 4 and kw["resnet_time_scale_shift"] == "scale_shift"
    assert (kw["sample_size"], kw["in_channels"], kw["out_channels"]) == (28, 1, 1)

    attn = peer.unet2d_kwargs(
        UNetConfig(image_size=32, in_channels=3, base_channels=32, attn_resolutions=(8,))
    )
    assert attn["block_out_channels"] == (32, 64, 64)
    assert attn["down_block_types"] == ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D")
    assert attn["up_block_types"] == ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")  # deepest level first
    assert attn["add_attention"] is True and attn["attention_head_dim"] == 16  # 64 channels / 4 heads
    assert attn["norm_num_groups"] == 8


def test_unet2d_kwargs_refuse_a_conditioned_unet(peer):
    with pytest.raises(VcdmError, match="unconditional"):
        peer.unet2d_kwargs(UNetConfig(emb_dim=32))


@pytest.mark.parametrize(
    "cfg",
    [
        UNetConfig(base_channels=16, channel_mults=(1, 2, 4)),  # the demo's
        UNetConfig(base_channels=8, channel_mults=(1, 2)),
        UNetConfig(image_size=32, in_channels=3, base_channels=32, attn_resolutions=(8,)),
    ],
)
def test_both_networks_have_the_same_parameter_count(peer, cfg):
    pytest.importorskip("diffusers")
    vcdm, unet2d = peer.num_params(UNet(cfg)), peer.num_params(peer.build_unet2d(cfg))
    if not cfg.attn_resolutions:
        assert vcdm == unet2d
    else:  # with scale-shift, UNet2DModel's mid-block attention has no group norm: 2 * channels fewer
        assert vcdm - unet2d == 2 * cfg.base_channels * cfg.channel_mults[-1]


def test_rounds_rotate_so_each_arm_takes_each_place(peer):
    order = peer.round_order(["a", "b", "c", "d"], 6)
    assert order[:2] == [["a", "b", "c", "d"], ["b", "c", "d", "a"]]
    assert all(sorted(r) == ["a", "b", "c", "d"] for r in order)
    for place in range(4):
        assert sorted(r[place] for r in order[:4]) == ["a", "b", "c", "d"]


def test_window_leaves_out_the_first_iteration_and_the_end(peer):
    stamps = [(0.0, 0.0), (5.0, 1.0), (6.0, 1.5), (8.0, 2.5), (100.0, 50.0)]
    assert peer.window(stamps, 2) == (3.0, 1.5)
    with pytest.raises(ValueError):
        peer.window(stamps, 4)


def test_summary_takes_per_round_ratios(peer):
    times = {
        "vcdm loop": [(2.0, 1.0), (4.0, 2.0), (2.0, 1.0)],
        "diffusers loop": [(3.0, 3.0), (6.0, 6.0), (3.0, 3.0)],
        "vcdm bare": [(1.0, 1.0), (2.0, 2.0), (1.0, 1.0)],
        "diffusers bare": [(1.0, 1.0), (2.0, 2.0), (1.0, 1.0)],
    }
    s = peer.summarize(times, images=640)
    assert s["rate"]["vcdm loop"] == pytest.approx(320.0)  # 640 images / median 2 s
    assert s["network"] == (1.0, 1.0, 1.0, 1.0)
    assert s["loop"] == (1.5, 3.0, 1.5, 1.5)  # diffusers' loop time / vcdm's: vcdm 1.5x faster
    assert s["overhead vcdm"] == (2.0, 1.0, 2.0, 2.0) and s["overhead diffusers"] == (3.0, 3.0, 3.0, 3.0)
    times["vcdm loop"][1] = (8.0, 2.0)  # one slow round moves the range, not the median
    assert peer.summarize(times, images=640)["loop"] == (1.5, 3.0, 0.75, 1.5)
    with pytest.raises(ValueError, match="same number of rounds"):
        peer.summarize(times | {"vcdm bare": [(1.0, 1.0)]}, images=640)


def test_missing_diffusers_is_a_one_line_error(peer, monkeypatch, capsys, tmp_path):
    for name in [m for m in sys.modules if m == "diffusers" or m.startswith("diffusers.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    assert peer.main(["--out", str(tmp_path / "report.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert f"pip install diffusers=={peer.DIFFUSERS_VERSION}" in err
    assert not (tmp_path / "report.md").exists()


def test_one_short_round_writes_the_report(peer, tmp_path):
    pytest.importorskip("diffusers")
    out = tmp_path / "peer.md"
    threads = torch.get_num_threads()
    try:
        assert peer.main(["--rounds", "1", "--steps", "1", "--limit", "512", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # main sets 2 for the benchmark
    text = out.read_text()
    assert "| whole training loop, images/s |" in text and "diffusers 0." in text
