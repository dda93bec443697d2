import math

import pytest
import torch
import torch.nn.functional as F

from vcdm.embedders import ConvEncoder, EncoderConfig, LearnedEmbedder
from vcdm.errors import VcdmError
from vcdm.guidance import classifier_free, clip_guidance, clip_target, dynamic_threshold, image_embed_fn
from vcdm.guidance.clip import embedding_similarity
from vcdm.samplers import euler


def _encoder(seed=0, dtype=torch.float32):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = ConvEncoder(EncoderConfig(image_size=8, channels=(8,), feature_dim=16, dim=4))
    return enc.to(dtype).eval().requires_grad_(False)


def _denoiser(x, sigma, cond):
    # a smooth non-linear stand-in for a network: the Gaussian-data denoiser plus a bounded bend
    s2 = sigma.reshape(-1, 1, 1, 1).to(x.dtype) ** 2
    return 0.25 / (0.25 + s2) * x + 0.1 * torch.tanh(x.roll(1, dims=-1))


def test_scale_zero_is_the_unguided_denoiser_exactly():
    fn = image_embed_fn(_encoder())
    assert clip_guidance(_denoiser, fn, torch.ones(4), 0.0) is _denoiser
    with pytest.raises(VcdmError, match="through"):
        clip_guidance(_denoiser, fn, torch.ones(4), 1.0, through="noisy")
    with pytest.raises(VcdmError, match=">= 0"):
        clip_guidance(_denoiser, fn, torch.ones(4), -1.0)


def test_gradient_through_the_denoiser_matches_finite_differences():
    enc = _encoder(dtype=torch.float64)
    fn = image_embed_fn(enc)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.3, 0.3, 0.3], dtype=torch.float64)
    target = F.normalize(torch.randn(4, generator=g, dtype=torch.float64), dim=0)
    scale = 2.0
    with torch.no_grad():
        guided = clip_guidance(_denoiser, fn, target, scale)(x, sigma, None)
    grad = (guided - _denoiser(x, sigma, None)) / (scale * 0.3**2)

    def sim(xx):
        return embedding_similarity(fn, _denoiser(xx, sigma, None), target)

    h = 1e-6
    with torch.no_grad():
        for _ in range(3):
            v = torch.randn(x.shape, generator=g, dtype=torch.float64)
            fd = (sim(x + h * v) - sim(x - h * v)) / (2 * h)
            exact = (grad * v).flatten(1).sum(1)
            assert exact.abs().min() > 1e-4
            assert torch.allclose(fd, exact, rtol=1e-5, atol=1e-9)


def test_denoised_mode_is_a_gradient_step_on_x0_hat():
    enc = _encoder(dtype=torch.float64)
    fn = image_embed_fn(enc)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    sigma = torch.full((2,), 5.0, dtype=torch.float64)
    target = F.normalize(torch.randn(4, generator=g, dtype=torch.float64), dim=0)
    d = _denoiser(x, sigma, None)
    with torch.no_grad():
        step = clip_guidance(_denoiser, fn, target, 0.5, through="denoised")(x, sigma, None) - d
    v = torch.randn(d.shape, generator=g, dtype=torch.float64)
    h = 1e-6
    fd = (embedding_similarity(fn, d + h * v, target) - embedding_similarity(fn, d - h * v, target)) / (2 * h)
    assert torch.allclose(fd, (step / 0.5 * v).flatten(1).sum(1), rtol=1e-5, atol=1e-9)


def test_guided_samples_move_toward_the_target_embedding():
    enc = _encoder(seed=2)
    embedder = LearnedEmbedder(enc)
    # a target image: a bright square on a dark background
    image = -torch.ones(1, 8, 8)
    image[:, 2:6, 2:6] = 1.0
    target = clip_target(embedder, image=image)
    noise = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    sigmas = torch.cat([torch.logspace(math.log10(10), math.log10(0.01), 12), torch.zeros(1)])
    plain = euler(_denoiser, noise, sigmas)
    guided = euler(clip_guidance(_denoiser, image_embed_fn(embedder), target, 10.0), noise, sigmas)
    sim_plain = embedder.encode_images(plain) @ target
    sim_guided = embedder.encode_images(guided) @ target
    assert sim_guided.mean() > sim_plain.mean() + 0.1
    assert (sim_guided > sim_plain).float().mean() > 0.9


def test_composes_with_classifier_free_guidance_and_thresholding():
    fn = image_embed_fn(_encoder())

    def d(x, sigma, cond):
        return _denoiser(x, sigma, cond) * (1 + 0.5 * cond["null"].float().view(-1, 1, 1, 1))

    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    sigma, cond = torch.ones(2), {"null": torch.zeros(2, dtype=torch.bool)}
    target = torch.ones(4)
    inner = dynamic_threshold(classifier_free(d, 3.0))
    with torch.no_grad():
        got = clip_guidance(inner, fn, target, 1.0)(x, sigma, cond)
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(embedding_similarity(fn, inner(xg, sigma, cond), target).sum(), xg)
    assert torch.allclose(got, inner(x, sigma, cond) + grad, atol=1e-6)


def test_learned_embedder_path_is_differentiable_and_matches_encode_images():
    embedder = LearnedEmbedder(_encoder())
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
    fn = image_embed_fn(embedder)
    xg = x.clone().requires_grad_(True)
    out = fn(xg)
    assert out.requires_grad and torch.allclose(out.detach(), embedder.encode_images(x))


def test_targets_and_embedders_without_a_differentiable_or_text_path():
    embedder = LearnedEmbedder(_encoder())
    image = torch.zeros(1, 8, 8)
    t = clip_target(embedder, image=image)
    assert t.shape == (4,) and torch.allclose(t.norm(), torch.tensor(1.0))
    with pytest.raises(VcdmError, match="no text encoder"):
        clip_target(embedder, text="a seven")
    with pytest.raises(VcdmError, match="exactly one"):
        clip_target(embedder)
    with pytest.raises(VcdmError, match="exactly one"):
        clip_target(embedder, image=image, text="a seven")

    class WithFeatures:
        def image_features(self, x):
            return x.flatten(1)[:, :4]

    assert image_embed_fn(WithFeatures())(torch.ones(1, 1, 8, 8)).shape == (1, 4)
    with pytest.raises(VcdmError, match="no differentiable image path"):
        image_embed_fn(object())


def test_text_target_uses_encode_text():
    class TextEmbedder:
        def encode_text(self, texts):
            assert texts == ["a seven"]
            return torch.tensor([[3.0, 4.0]])

    assert torch.allclose(clip_target(TextEmbedder(), text="a seven"), torch.tensor([0.6, 0.8]))


def test_clip_embedder_image_path_is_differentiable():
    from vcdm.embedders import ClipEmbedder

    if not hasattr(ClipEmbedder, "image_features"):
        pytest.skip("ClipEmbedder has no differentiable image_features method yet")
    transformers = pytest.importorskip("transformers")
    common = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
    text = dict(
        common, vocab_size=64, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1
    )
    vision = dict(common, image_size=32, patch_size=8)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.CLIPModel(config)
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    embedder = ClipEmbedder(model, None, mean, std, "cpu")
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(6)) * 2 - 1
    xg = x.clone().requires_grad_(True)
    out = image_embed_fn(embedder)(xg)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), xg)
    assert grad.abs().sum() > 0
    assert torch.allclose(out.detach(), embedder.encode_images(x), atol=1e-6)


def test_works_on_embedding_denoisers_too():
    # On the prior, x is the (normalised) embedding itself: embed_fn can be the identity (or the
    # de-normalisation), and guidance pulls the sampled embeddings toward the target direction.
    def prior(y, sigma, cond):
        return y / (1 + sigma.reshape(-1, 1) ** 2)  # the denoiser of N(0, I) data

    target = F.normalize(torch.tensor([1.0, 1.0, 0.0, 0.0]), dim=0)
    noise = torch.randn(64, 4, generator=torch.Generator().manual_seed(7))
    sigmas = torch.cat([torch.logspace(math.log10(20), math.log10(0.01), 16), torch.zeros(1)])
    plain = euler(prior, noise, sigmas)
    guided = euler(clip_guidance(prior, lambda y: y, target, 2.0), noise, sigmas)
    cos_plain = F.cosine_similarity(plain, target[None], dim=1)
    cos_guided = F.cosine_similarity(guided, target[None], dim=1)
    assert cos_guided.mean() > cos_plain.mean() + 0.3
