"""Editing with (y, x_T) on a trained tiny two-stage run: inversion, variations, interpolation, embedding
edits, SDEdit and ILVR; slerp and PSNR analytically."""

import contextlib
import inspect
import math

import pytest
import torch
from fake_runs import train_tiny_run

from vcdm.cli import main
from vcdm.config import DiffusionConfig
from vcdm.data import load_mnist
from vcdm.editing import (
    direction_from_class_means,
    direction_from_images,
    direction_from_texts,
    edit_embedding,
    ilvr,
    ilvr_sample,
    interpolate,
    invert,
    load_latent,
    load_pipeline,
    lowpass,
    psnr,
    reconstruct,
    save_latent,
    sdedit,
    slerp,
    variations,
)
from vcdm.errors import VcdmError
from vcdm.pipeline import Pipeline, sampling_sigmas
from vcdm.samplers import SAMPLERS, euler
from vcdm.seeding import COMPONENT_STREAMS, START, seeded_randn

needs_correct_hook = pytest.mark.skipif(
    "correct" not in inspect.signature(euler).parameters,
    reason="ILVR needs the samplers' `correct` hook (proposed to vcdm/samplers)",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("run"), ("prior", "decoder"))


@pytest.fixture(scope="module")
def pipe(run):
    return load_pipeline(run)


@pytest.fixture(scope="module")
def images():
    return load_mnist("valid", limit=3).as_float()  # held-out digits, (3, 1, 28, 28)


def _corr(a, b):
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


# ---- analytic helpers ----


def test_psnr_values():
    a = torch.zeros(2, 1, 4, 4)
    b = a.clone()
    b[1] += 0.2  # MSE 0.04: 10 log10(4 / 0.04) = 20 dB
    p = psnr(a, b)
    assert p.shape == (2,) and math.isinf(p[0]) and abs(float(p[1]) - 20.0) < 1e-4


def test_slerp_endpoints_norm_and_degenerate_cases():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    # Unit vectors stay on the unit sphere at every t (linear interpolation would cut inside it).
    ua, ub = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    for t in (0.25, 0.5, 0.8):
        assert torch.allclose(slerp(ua, ub, t).norm(dim=1), torch.ones(5), atol=1e-5)
    assert (((ua + ub) / 2).norm(dim=1) < 0.99).all()
    # Orthogonal vectors of norm r: the midpoint is (a + b) / sqrt(2).
    e0, e1 = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    assert torch.allclose(slerp(e0, e1, 0.5), (e0 + e1) / math.sqrt(2), atol=1e-6)
    # Nearly parallel, opposite and zero vectors fall back to linear interpolation (no NaN).
    close = a + 1e-7
    assert torch.allclose(slerp(a, close, 0.3), 0.7 * a + 0.3 * close, atol=1e-6)
    assert torch.allclose(slerp(a, -a, 0.5), torch.zeros_like(a), atol=1e-6)
    assert torch.equal(slerp(torch.zeros(16), b[0], 0.5), 0.5 * b[0])
    # A vector of t gives one interpolant per t: t (F,) with (1, D) -> (F, D).
    frames = slerp(a[:1], b[:1], torch.linspace(0, 1, 4))
    assert frames.shape == (4, 16) and torch.allclose(frames[-1], b[0], atol=1e-6)


def test_lowpass_is_a_projection_and_checks_the_factor():
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lowpass(x, 1), x)
    low = lowpass(x, 4)
    assert torch.allclose(lowpass(low, 4), low) and torch.allclose(
        low.mean((2, 3)), x.mean((2, 3)), atol=1e-6
    )
    with pytest.raises(VcdmError, match="factor 3 must divide the image size 28x28"):
        lowpass(x, 3)


# ---- inversion and the latent ----


def test_inversion_then_decoding_reconstructs(pipe, images):
    y, x_T = invert(pipe, images, num_steps=20, fixed_point_iters=2)
    assert y.shape == (3, 8) and x_T.shape == images.shape
    assert 0.7 < float(x_T.std()) < 1.3  # unit-scale noise
    p_fixed = psnr(reconstruct(pipe, y, x_T, num_steps=20), images)
    # Measured ~40 dB on this 256-image model (DDIM inversion works whatever the model's quality).
    assert (p_fixed > 30).all(), p_fixed
    y0, x_T0 = invert(pipe, images, num_steps=20)
    assert torch.equal(y0, y)  # y is the image's own embedding, independent of the grid
    p_plain = psnr(reconstruct(pipe, y0, x_T0, num_steps=20), images)
    assert (p_plain < p_fixed - 5).all()  # first-order inversion: the fixed-point refinement matters


def test_inversion_needs_the_embedder(run, images):
    with pytest.raises(VcdmError, match="no image embedder"):
        invert(Pipeline.from_run(run), images, num_steps=2)
    with pytest.raises(VcdmError, match=r"expected \(B, 1, 28, 28\)"):
        invert(load_pipeline(run), torch.zeros(1, 3, 28, 28), num_steps=2)


def test_latent_file_round_trip(tmp_path):
    y, x_T = torch.randn(2, 8), torch.randn(2, 1, 28, 28)
    save_latent(tmp_path / "z.safetensors", y, x_T, {"run": "r", "num_steps": 10})
    y2, x_T2, meta = load_latent(tmp_path / "z.safetensors")
    assert torch.equal(y, y2) and torch.equal(x_T, x_T2) and meta == {"run": "r", "num_steps": "10"}
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(VcdmError, match="bad.safetensors: not a readable"):
        load_latent(tmp_path / "bad.safetensors")


@contextlib.contextmanager
def decoder_embeddings(pipe):
    """Record cond["emb"] of every decoder call made inside the block."""
    seen, decoder = [], pipe.decoder

    def spy(x, sigma, cond):
        seen.append(cond["emb"])
        return decoder(x, sigma, cond)

    pipe.components["decoder"].denoiser = spy
    try:
        yield seen
    finally:
        pipe.components["decoder"].denoiser = decoder


def test_variations_keep_y_and_draw_x_T_from_the_seeds(pipe, images):
    y = invert(pipe, images[:1], num_steps=2)[0]
    with decoder_embeddings(pipe) as seen:
        out = variations(pipe, y, [4, 5, 4], num_steps=4)
    assert out.shape == (3, 1, 28, 28) and len(seen) == 4
    assert all(torch.equal(e, y.expand(3, -1)) for e in seen)  # every call is conditioned on y
    assert torch.allclose(out[0], out[2], atol=1e-5) and (out[0] - out[1]).abs().mean() > 0.05
    same = reconstruct(
        pipe, y, seeded_randn([5], (1, 28, 28), COMPONENT_STREAMS["decoder"], START), num_steps=4
    )
    assert torch.allclose(out[1:2], same, atol=1e-5)  # x_T(seed) is the noise `pipe(seeds)` starts from


def test_interpolation_endpoints_reconstruct_the_inputs(pipe, images):
    frames = interpolate(pipe, images[0], images[1], 4, num_steps=20, fixed_point_iters=2)
    assert frames.shape == (4, 1, 28, 28)
    assert psnr(frames[:1], images[:1]) > 30 and psnr(frames[-1:], images[1:2]) > 30
    middle = frames[1:3]
    assert (psnr(middle, images[:1].expand(2, -1, -1, -1)) < 25).all()
    assert (psnr(middle, images[1:2].expand(2, -1, -1, -1)) < 25).all()


# ---- embedding edits ----


def test_embedding_edit_keeps_x_T_and_moves_y(pipe, images):
    y, x_T = invert(pipe, images[:2], num_steps=4)
    direction = torch.randn(8, generator=torch.Generator().manual_seed(0))
    with decoder_embeddings(pipe) as seen:
        out = edit_embedding(pipe, y, x_T, direction, [0.0, 2.0], num_steps=4)
    assert out.shape == (2, 2, 1, 28, 28)
    # Rows are images, columns strengths: (y_0, y_0 + 2d, y_1, y_1 + 2d), each with its image's x_T.
    expected = torch.stack([y[0], y[0] + 2 * direction, y[1], y[1] + 2 * direction])
    assert torch.allclose(seen[0], expected, atol=1e-6)
    assert torch.allclose(out[:, 0], reconstruct(pipe, y, x_T, num_steps=4), atol=1e-5)
    assert (out[:, 1] - out[:, 0]).abs().mean() > 1e-3
    with pytest.raises(VcdmError, match="direction must be"):
        edit_embedding(pipe, y, x_T, torch.zeros(3), [1.0], num_steps=4)


def test_directions(pipe, images):
    assert torch.allclose(direction_from_images(pipe, images, images), torch.zeros(8), atol=1e-5)
    data = load_mnist("valid", limit=200)
    d = direction_from_class_means(pipe, data, 1, 7)
    ones, sevens = data.as_float(data.labels == 1), data.as_float(data.labels == 7)
    assert torch.allclose(d, direction_from_images(pipe, ones, sevens), atol=1e-5) and d.norm() > 0.1
    with pytest.raises(VcdmError, match="class label 12"):
        direction_from_class_means(pipe, data, 1, 12)
    with pytest.raises(VcdmError, match="no text encoder"):
        direction_from_texts(pipe, "a one", "a seven")


# ---- SDEdit ----


def test_sdedit_at_zero_returns_the_guide(pipe, images, gaussian_denoiser):
    assert torch.equal(sdedit(pipe, images, 0.0, [0, 1, 2], num_steps=4), images)
    x = torch.randn(3, 5)
    assert torch.equal(sdedit(gaussian_denoiser, x, 0.0, [0, 1, 2], num_steps=4, cond=None), x)


def test_sdedit_follows_the_guide_at_low_sigma_and_ignores_it_at_sigma_max(pipe):
    # Random +-1 patterns as guides: no digit-like structure that every output shares.
    g = torch.Generator().manual_seed(0)
    guides = torch.randint(0, 2, (8, 1, 28, 28), generator=g).float() * 2 - 1
    seeds = list(range(8))
    sigma_max = pipe.decoder_diffusion.sigma_max
    low = sdedit(pipe, guides, 0.05, seeds, num_steps=6, cond="prior")
    high = sdedit(pipe, guides, sigma_max, seeds, sampler="heun", num_steps=6, cond="prior")
    assert _corr(low, guides) > 0.8
    assert abs(_corr(high, guides)) < 0.1
    # A bare denoiser on the grid below sigma_0: same seeds, same output.
    a = sdedit(pipe.decoder, guides[:2], 1.0, [0, 1], num_steps=4, cond={"emb": torch.zeros(2, 8)})
    b = sdedit(pipe.decoder, guides[:2], 1.0, [0, 1], num_steps=4, cond={"emb": torch.zeros(2, 8)})
    assert torch.equal(a, b)


def test_sdedit_grid_is_the_tail_of_the_models_grid(pipe, images):
    grids = []

    def spy_sampler(denoiser, noise, sigmas, cond, **options):
        grids.append(sigmas)
        return noise * sigmas[0]

    sdedit(pipe, images[:1], 2.0, [0], num_steps=10, cond="image", sampler=spy_sampler)
    full = sampling_sigmas(pipe.decoder_diffusion, 10)
    assert grids[0][0] == 2.0 and torch.equal(grids[0][1:], full[full < 2.0])


# ---- ILVR ----


@needs_correct_hook
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_ilvr_with_factor_one_reproduces_the_reference(pipe, images, name):
    out = ilvr_sample(pipe, images[:1], 1, [0, 1], sampler=name, num_steps=4)
    assert torch.equal(out, images[:1].expand(2, -1, -1, -1))


@needs_correct_hook
def test_ilvr_keeps_the_references_low_frequencies_only(pipe, images):
    ref = images[:1]
    # The bare decoder (the Pipeline path clamps to [-1, 1] after the last correction).
    y = invert(pipe, ref, num_steps=2)[0].expand(2, -1)
    out = ilvr_sample(pipe.decoder, ref, 4, [0, 1], num_steps=6, cond={"emb": y})
    assert torch.allclose(lowpass(out, 4), lowpass(ref, 4).expand(2, -1, -1, -1), atol=1e-5)
    assert (out - ref).abs().mean() > 0.02  # the detail is the model's own
    assert (out[0] - out[1]).abs().mean() > 0.01


@needs_correct_hook
def test_ilvr_wrapper_on_a_bare_denoiser(gaussian_denoiser):
    ref = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = sampling_sigmas(DiffusionConfig(), 5)
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    out = ilvr(euler, gaussian_denoiser, noise, sigmas, reference=ref, factor=2, generator=torch.Generator())
    assert torch.allclose(lowpass(out, 2), lowpass(ref, 2).expand(3, -1, -1, -1), atol=1e-5)
    # Corrections stop below sigma_stop: above every level of the grid, ILVR is the plain sampler.
    free = ilvr(euler, gaussian_denoiser, noise, sigmas, reference=ref, factor=1, generator=torch.Generator(),
                sigma_stop=1e3)  # fmt: skip
    assert torch.equal(free, euler(gaussian_denoiser, noise, sigmas))
    late = ilvr(euler, gaussian_denoiser, noise, sigmas, reference=ref, factor=1, generator=torch.Generator(),
                sigma_stop=float(sigmas[-2]))  # fmt: skip
    assert not torch.equal(late, ref.expand(3, -1, -1, -1)) and (late - ref).abs().max() < 0.05


def test_editing_a_decoder_below_the_embedders_size(tmp_path):
    # a cascade's base decoder (14x14) under an embedder trained at the data's size (28x28): embed() resizes
    common = [str(tmp_path), "--preset", "tiny", "--no-progress", "--set", "decoder.image_size=14"]
    for step in (["train", "embedder"], ["embed"], ["train", "prior"], ["train", "decoder"]):
        assert main([*step, *common]) == 0
    pipe = load_pipeline(tmp_path)
    assert pipe.image_shape == (1, 14, 14)
    x = load_mnist("valid", limit=2, image_size=14).as_float()
    y, x_T = invert(pipe, x, num_steps=4)
    assert x_T.shape == (2, 1, 14, 14)
    up = torch.nn.functional.interpolate(x, size=(28, 28), mode="bicubic", antialias=True).clamp(-1, 1)
    torch.testing.assert_close(y, pipe.stats.normalize(pipe.embedder.encode_images(up).float()))
