import pytest
import torch

from vcdm.errors import VcdmError
from vcdm.guidance import classifier_free, compose, dynamic_threshold, static_threshold
from vcdm.guidance.threshold import quantile_per_sample


def _const(out):
    return lambda x, sigma, cond: out


def test_static_threshold_clamps_to_the_range():
    out = torch.tensor([[-3.0, -0.5, 0.2, 2.0]])
    got = static_threshold(_const(out))(torch.zeros(1, 4), torch.ones(1), None)
    assert torch.equal(got, torch.tensor([[-1.0, -0.5, 0.2, 1.0]]))
    got = static_threshold(_const(out), lo=0.0, hi=0.5)(torch.zeros(1, 4), torch.ones(1), None)
    assert torch.equal(got, torch.tensor([[0.0, 0.0, 0.2, 0.5]]))
    with pytest.raises(VcdmError, match="lo < hi"):
        static_threshold(_const(out), lo=1.0, hi=1.0)


def test_quantile_matches_torch_quantile():
    v = torch.randn(3, 2, 5, 7, generator=torch.Generator().manual_seed(0))
    for p in (0.0, 0.3, 0.995, 1.0):
        assert torch.allclose(quantile_per_sample(v, p), torch.quantile(v.flatten(1), p, dim=1))


def test_dynamic_threshold_is_the_identity_when_the_percentile_is_within_range():
    out = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1  # all in [-1, 1]
    got = dynamic_threshold(_const(out), 0.995)(torch.zeros_like(out), torch.ones(4), None)
    assert torch.equal(got, out)


def test_dynamic_threshold_keeps_values_in_range_and_rescales_saturated_samples():
    g = torch.Generator().manual_seed(2)
    out = torch.randn(6, 1, 8, 8, generator=g) * torch.tensor([0.2, 0.5, 1.0, 3.0, 10.0, 50.0]).view(
        -1, 1, 1, 1
    )
    p = 0.9
    got = dynamic_threshold(_const(out), p)(torch.zeros_like(out), torch.ones(6), None)
    assert got.abs().max() <= 1.0
    s = torch.quantile(out.abs().flatten(1), p, dim=1).clamp(min=1).view(-1, 1, 1, 1)
    assert torch.allclose(got, out.clamp(-s, s) / s)
    # a saturated sample keeps its shape: values below its quantile are scaled, not clipped
    big = out[5].abs() < s[5]
    assert torch.allclose(got[5][big], out[5][big] / s[5])
    # a sample whose quantile exceeded 1 now reaches exactly +-1 (its tail was clipped at s, then scaled)
    peak = got.abs().flatten(1).max(dim=1).values
    assert torch.allclose(peak[s.flatten() > 1], torch.ones(int((s > 1).sum())))


def test_dynamic_threshold_rejects_bad_percentiles():
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(VcdmError, match="percentile"):
            dynamic_threshold(_const(torch.zeros(1)), p)


def test_thresholds_compose_with_classifier_free_guidance():
    def d(x, sigma, cond):  # conditional: x + 0.9, unconditional: x - 0.9
        sign = 1 - 2 * cond["null"].float().view(-1, 1)
        return x + 0.9 * sign

    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(3)) * 0.3
    cond = {"null": torch.zeros(5, dtype=torch.bool)}
    w = 8.0
    cfg_out = classifier_free(d, w)(x, torch.ones(5), cond)
    assert cfg_out.abs().max() > 5  # large weights saturate x0_hat...
    for wrapped in (
        dynamic_threshold(classifier_free(d, w)),
        compose(lambda dn: classifier_free(dn, w), dynamic_threshold)(d),
    ):
        got = wrapped(x, torch.ones(5), cond)
        s = torch.quantile(cfg_out.abs(), 0.995, dim=1).clamp(min=1).view(-1, 1)
        assert torch.allclose(got, cfg_out.clamp(-s, s) / s)  # ...thresholding after CFG brings it back
        assert got.abs().max() <= 1.0
    assert torch.equal(static_threshold(classifier_free(d, w))(x, torch.ones(5), cond), cfg_out.clamp(-1, 1))
