import torch

from vcdm.guidance import classifier_free, drop_condition


def _denoiser(calls):
    def d(x, sigma, cond):
        calls.append(x.shape[0])
        null = cond["null"].view(-1, 1).float()
        return (1 - null) * (x + cond["label"].view(-1, 1)) + null * (x * 0.5)

    return d


def test_weight_one_is_the_conditional_denoiser_exactly():
    calls = []
    d = _denoiser(calls)
    assert classifier_free(d, 1.0) is d


def test_guidance_formula_in_one_batched_call():
    calls = []
    d = _denoiser(calls)
    x, sigma = torch.randn(3, 2), torch.ones(3)
    cond = {"label": torch.tensor([1.0, 2.0, 3.0]), "null": torch.zeros(3, dtype=torch.bool)}
    out = classifier_free(d, 3.0)(x, sigma, cond)
    calls_guided = list(calls)
    d_c = d(x, sigma, cond)
    d_u = d(x, sigma, {**cond, "null": torch.ones(3, dtype=torch.bool)})
    assert calls_guided == [6]  # one call on the doubled batch
    assert torch.allclose(out, d_u + 3.0 * (d_c - d_u))
    out0 = classifier_free(d, 0.0)(x, sigma, cond)
    assert torch.allclose(out0, d_u)


def test_guidance_interval_skips_outside_range():
    calls = []
    d = _denoiser(calls)
    cond = {"label": torch.tensor([1.0]), "null": torch.zeros(1, dtype=torch.bool)}
    g = classifier_free(d, 4.0, sigma_range=(0.5, 2.0))
    x = torch.randn(1, 2)
    assert torch.allclose(g(x, torch.tensor([5.0]), cond), d(x, torch.tensor([5.0]), cond))


def test_drop_condition_rate_and_determinism():
    cond = {"label": torch.zeros(10000, dtype=torch.long)}
    a = drop_condition(cond, 0.1, 10000, torch.Generator().manual_seed(0))
    b = drop_condition(cond, 0.1, 10000, torch.Generator().manual_seed(0))
    assert torch.equal(a["null"], b["null"])
    assert abs(a["null"].float().mean().item() - 0.1) < 0.01
    assert drop_condition(cond, 0.0, 10000, torch.Generator()) is cond
