import math

import pytest
import torch
from torch import nn

from vcdm.errors import VcdmError
from vcdm.guidance import classifier_free, classifier_guidance
from vcdm.guidance.classifier import classifier_log_prob_grad
from vcdm.networks.classifier import Classifier, ClassifierConfig, classifier_input
from vcdm.samplers import euler

SD = 0.5  # sigma_data


class TwoBlobs:
    """x0 ~ 1/2 N(-m, std^2 I) + 1/2 N(+m, std^2 I) on (1, 2, 2) images: exact denoisers and classifier."""

    def __init__(self, m=0.8, std=0.3):
        self.mu = torch.tensor([-m, m], dtype=torch.float64)
        self.std = std

    def _log_lik(self, x, sigma):  # (B, 2): log N(x; mu_k, (std^2 + sigma^2) I) up to a shared constant
        var = (self.std**2 + sigma.reshape(-1, 1) ** 2).to(x.dtype)
        sq = (x.flatten(1)[:, None, :] - self.mu.to(x.dtype)[None, :, None]).pow(2).sum(-1)
        return -sq / (2 * var)

    def conditional(self, x, sigma, a):  # E[x0 | x, a] (Gaussian posterior mean)
        s2 = sigma.reshape(-1, 1, 1, 1).to(x.dtype) ** 2
        mu = self.mu.to(x.dtype)[a].reshape(-1, 1, 1, 1)
        return mu + self.std**2 / (self.std**2 + s2) * (x - mu)

    def denoiser(self, x, sigma, cond=None):  # E[x0 | x]: mixture of the two posterior means
        sigma = sigma.reshape(-1).expand(x.shape[0])
        w = self._log_lik(x, sigma).softmax(1)  # (B, 2)
        a0, a1 = (self.conditional(x, sigma, torch.full((x.shape[0],), k)) for k in (0, 1))
        return w[:, 0].reshape(-1, 1, 1, 1) * a0 + w[:, 1].reshape(-1, 1, 1, 1) * a1

    def classifier(self):
        blobs = self

        class Exact(nn.Module):  # logits of p(a | x, sigma), called like a noise-conditioned Classifier
            def forward(self, x_in, c_noise, generator=None):
                sigma = (4 * c_noise).exp()
                x = x_in * (sigma**2 + SD**2).sqrt().reshape(-1, 1, 1, 1)  # undo c_in
                return blobs._log_lik(x, sigma)

        return Exact()


def _tiny_classifier(seed=0):
    cfg = ClassifierConfig(
        image_size=8, channels=(8, 8), feature_dim=8, num_classes=3, noise_conditioned=True
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Classifier(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # random non-zero FiLM weights: the noise level matters
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def test_scale_zero_is_the_unguided_denoiser_exactly():
    blobs = TwoBlobs()
    d = blobs.denoiser
    assert classifier_guidance(d, blobs.classifier(), 1, 0.0) is d
    with pytest.raises(VcdmError, match=">= 0"):
        classifier_guidance(d, blobs.classifier(), 1, -1.0)


def test_exact_classifier_at_scale_one_gives_the_class_conditional_denoiser():
    # Bayes: grad log p(x | a) = grad log p(x) + grad log p(a | x), and D = x + sigma^2 grad log p (Tweedie),
    # so D + sigma^2 grad log p(a | x) is exactly the class-conditional denoiser.
    blobs = TwoBlobs()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 2, 2, generator=g, dtype=torch.float64)
    a = torch.tensor([0, 1] * 4)
    for sigma in (0.05, 0.5, 3.0):
        s = torch.full((8,), sigma, dtype=torch.float64)
        x_s = x * math.sqrt(sigma**2 + 0.3**2)
        _, grad = classifier_log_prob_grad(blobs.classifier(), x_s, s, a, sigma_data=SD)
        guided = blobs.denoiser(x_s, s) + s.reshape(-1, 1, 1, 1) ** 2 * grad
        assert torch.allclose(guided, blobs.conditional(x_s, s, a), atol=1e-9)


def test_guided_sampling_lands_on_the_requested_class():
    blobs = TwoBlobs()
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(200, 1, 2, 2, generator=g)
    sigmas = torch.cat([torch.logspace(math.log10(20), math.log10(0.01), 40), torch.zeros(1)])
    plain = euler(blobs.denoiser, noise, sigmas)
    guided = euler(
        classifier_guidance(blobs.denoiser, blobs.classifier(), 1, 1.0, sigma_data=SD), noise, sigmas
    )
    side_plain = (plain.flatten(1).mean(1) > 0).float().mean()
    side_guided = (guided.flatten(1).mean(1) > 0).float().mean()
    assert 0.3 < side_plain < 0.7  # unguided: both blobs
    assert side_guided > 0.97  # s = 1 with the exact classifier: p(x | a = 1)


def test_gradient_matches_finite_differences():
    # float32 (the classifier's noise embedding is float32): a central difference with h = 2e-3 has a
    # truncation error ~h^2 and a rounding error ~1e-7 / h (measured: relative error < 6e-4).
    model = _tiny_classifier()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 1, 8, 8, generator=g)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    labels = torch.tensor([0, 2, 1])
    logp, grad = classifier_log_prob_grad(model, x, sigma, labels, sigma_data=SD)

    def f(xx):
        x_in, c_noise = classifier_input(xx, sigma, SD)
        return model(x_in, c_noise).log_softmax(1).gather(1, labels[:, None]).squeeze(1)

    assert torch.allclose(logp, f(x))
    h = 2e-3
    with torch.no_grad():
        for _ in range(3):
            v = torch.randn(x.shape, generator=g)
            fd = (f(x + h * v) - f(x - h * v)) / (2 * h)  # (B,) directional derivatives
            exact = (grad * v).flatten(1).sum(1)
            assert exact.abs().min() > 1e-3  # a real derivative, not zeros on both sides
            assert torch.allclose(fd, exact, rtol=2e-3, atol=1e-4)


def test_guided_denoiser_formula_and_label_sources():
    model = _tiny_classifier()

    def d(x, sigma, cond):
        return 0.5 * x

    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 1, 8, 8, generator=g)
    sigma = torch.full((4,), 2.0)
    labels = torch.tensor([0, 1, 2, 1])
    _, grad = classifier_log_prob_grad(model, x, sigma, labels, sigma_data=SD)
    expected = d(x, sigma, None) + 3.0 * 4.0 * grad
    with torch.no_grad():  # samplers run under no_grad; the guidance enables grad itself
        by_tensor = classifier_guidance(d, model, labels, 3.0)(x, sigma, None)
        by_cond = classifier_guidance(d, model, None, 3.0)(x, sigma, {"label": labels})
        by_fn = classifier_guidance(d, model, lambda cond, b: labels[:b], 3.0)(x, sigma, None)
        by_int = classifier_guidance(d, model, 2, 3.0)(x, sigma, None)
    for got in (by_tensor, by_cond, by_fn):
        assert torch.allclose(got, expected, atol=1e-5)
    _, grad2 = classifier_log_prob_grad(model, x, sigma, torch.full((4,), 2), sigma_data=SD)
    assert torch.allclose(by_int, d(x, sigma, None) + 12.0 * grad2, atol=1e-5)
    with pytest.raises(VcdmError, match="no labels"):
        classifier_guidance(d, model, None, 1.0)(x, sigma, None)
    with pytest.raises(VcdmError, match="3 labels for a batch of 4"):
        classifier_guidance(d, model, labels[:3], 1.0)(x, sigma, None)
    ranged = classifier_guidance(d, model, labels, 3.0, sigma_range=(0.0, 1.0))
    assert torch.equal(ranged(x, sigma, None), d(x, sigma, None))  # sigma = 2 is outside: unguided


def test_composes_with_classifier_free_guidance():
    model = _tiny_classifier()

    def d(x, sigma, cond):
        return x * (0.5 + 0.25 * cond["null"].float().view(-1, 1, 1, 1))

    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    sigma, labels = torch.ones(2), torch.tensor([1, 0])
    cond = {"label": labels, "null": torch.zeros(2, dtype=torch.bool)}
    cfg_d = classifier_free(d, 3.0)
    _, grad = classifier_log_prob_grad(model, x, sigma, labels, sigma_data=SD)
    got = classifier_guidance(cfg_d, model, None, 2.0)(x, sigma, cond)
    assert torch.allclose(got, cfg_d(x, sigma, cond) + 2.0 * grad, atol=1e-6)


def test_plain_classifier_is_rejected():
    plain = Classifier(ClassifierConfig(image_size=8, channels=(8,), feature_dim=8))
    with pytest.raises(VcdmError, match="noise-conditioned"):
        classifier_guidance(lambda x, s, c: x, plain, 0, 1.0)
