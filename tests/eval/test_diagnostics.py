import math

import numpy as np
import pytest
import torch
from PIL import Image

from vcdm.errors import VcdmError
from vcdm.eval.diagnostics import (
    embedding_frechet,
    ks_distance,
    memorization_summary,
    oracle_share,
    plot_curves,
    relative_change,
    seed_summary,
    throughput,
    time_share,
)
from vcdm.eval.memorization import nearest_neighbour_distances


def test_oracle_share_arithmetic():
    # single 10, two-stage 6, oracle 5: the prior recovers 4 of the oracle's 5 points of gain
    assert oracle_share(10.0, 6.0, 5.0) == pytest.approx(0.8)
    assert oracle_share(10.0, 5.0, 5.0) == pytest.approx(1.0)  # sampled embeddings as good as real ones
    assert oracle_share(10.0, 10.0, 5.0) == 0.0
    assert oracle_share(10.0, 12.0, 5.0) == pytest.approx(-0.4)  # two-stage worse than single-stage
    assert math.isnan(oracle_share(10.0, 6.0, 10.0))  # the oracle gains nothing: no share to speak of
    assert math.isnan(oracle_share(10.0, 6.0, 11.0))
    assert math.isnan(oracle_share(float("nan"), 6.0, 5.0))


def test_relative_change():
    assert relative_change(6.0, 10.0) == pytest.approx(-0.4)
    assert relative_change(15.0, 10.0) == pytest.approx(0.5)
    assert math.isnan(relative_change(1.0, 0.0))
    assert math.isnan(relative_change(float("inf"), 1.0))


def test_seed_summary_mean_and_sample_std():
    s = seed_summary([1.0, 2.0, 3.0])
    assert s == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "n": 3}
    assert seed_summary([4.0])["std"] == 0.0
    with pytest.raises(VcdmError, match="non-empty"):
        seed_summary([])


def test_prior_frechet_of_identical_sets_is_zero_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(500, 8, generator=g)
    assert embedding_frechet(emb, emb.clone()) == pytest.approx(0.0, abs=1e-9)
    # Mean shifted by 1 in every dimension, same covariance: the distance is ||mu1 - mu2||^2 = D.
    assert embedding_frechet(emb + 1.0, emb) == pytest.approx(8.0, rel=1e-6)
    # Two independent samples of one distribution: small, and far below the shifted one.
    other = torch.randn(500, 8, generator=g)
    assert embedding_frechet(other, emb) < 0.3
    with pytest.raises(VcdmError, match="dimensions differ"):
        embedding_frechet(emb, emb[:, :4])


def test_ks_distance():
    a = np.arange(10.0)
    assert ks_distance(a, a) == 0.0
    assert ks_distance(a, a + 100) == 1.0
    assert ks_distance(np.array([0.0, 1.0]), np.array([1.0])) == pytest.approx(0.5)


def test_memorization_summary_tells_copies_fresh_samples_and_off_manifold_apart():
    rng = np.random.default_rng(0)
    d = 8
    train = rng.standard_normal((2000, d))
    heldout_nn = nearest_neighbour_distances(rng.standard_normal((500, d)), train)

    fresh = memorization_summary(
        nearest_neighbour_distances(rng.standard_normal((500, d)), train), heldout_nn
    )
    assert 0.9 < fresh["median_ratio"] < 1.1 and fresh["ks"] < 0.15 and fresh["near_copy"] < 0.05

    copies = train[:500] + 1e-3 * rng.standard_normal((500, d))
    copied = memorization_summary(nearest_neighbour_distances(copies, train), heldout_nn)
    assert copied["near_copy"] == 1.0 and copied["median_ratio"] < 0.05 and copied["ks"] > 0.9

    far = memorization_summary(
        nearest_neighbour_distances(3 * rng.standard_normal((500, d)), train), heldout_nn
    )
    assert far["median_ratio"] > 1.5 and far["near_copy"] == 0.0

    assert set(fresh) == {"sample_p1", "sample_p5", "sample_median", "heldout_p1", "heldout_p5",
                          "heldout_median", "median_ratio", "ks", "near_copy"}  # fmt: skip
    assert fresh["sample_p1"] <= fresh["sample_p5"] <= fresh["sample_median"]
    with pytest.raises(VcdmError, match="sample_nn"):
        memorization_summary(np.array([]), heldout_nn)


def test_throughput_and_time_share():
    assert throughput({"nimg": 1000, "seconds": 4.0}) == {
        "nimg": 1000,
        "seconds": 4.0,
        "images_per_second": 250.0,
    }
    assert math.isnan(throughput({"nimg": 10, "seconds": 0})["images_per_second"])
    assert time_share(1.0, 4.0) == 0.25
    assert math.isnan(time_share(1.0, 0.0))


def test_plot_curves_writes_a_png(tmp_path):
    path = plot_curves({"single": ([1000, 2000, 4000], [30.0, 20.0, 12.0]),
                        "two-stage": ([1000, 2000, 4000], [25.0, float("nan"), 8.0])},
                       tmp_path / "fig" / "curve.png", title="FID", xlabel="images", ylabel="FID")  # fmt: skip
    img = Image.open(path)
    assert img.format == "PNG" and img.size[0] >= 400
    # Something other than the white background was drawn (axes, lines in colour).
    colours = {c for _, c in img.convert("RGB").getcolors(1 << 16)}
    assert len(colours) > 3
    with pytest.raises(VcdmError, match="nothing to plot"):
        plot_curves({"x": ([1], [float("nan")])}, tmp_path / "empty.png", title="", xlabel="", ylabel="")
