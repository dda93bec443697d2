"""Analytic checks: on Gaussian data the ideal denoiser is known, so every sampler must land on the data's
mean and variance; a contract suite runs every sampler through the same checks."""

import pytest
import torch

from vcdm.diffusion import DDPMSchedule, karras_sigmas
from vcdm.errors import VcdmError
from vcdm.samplers import SAMPLERS, ddim, ddim_invert, ddpm, euler, heun

MU, STD = 0.3, 0.5
OPTIONS = {
    "euler": {},
    "heun": {},
    "heun_churn": {"s_churn": 10.0, "s_min": 0.05, "s_max": 50.0},
    "ddim": {"eta": 0.0},
    "ddim_eta_half": {"eta": 0.5},
    "ddpm": {},
}


def _sampler(name):
    return SAMPLERS[name.split("_")[0]]


@pytest.mark.parametrize("name", list(OPTIONS))
def test_sampler_reproduces_gaussian_moments(name, gaussian_denoiser):
    # Enough steps that the first-order samplers' discretisation bias (~1/N) is under 3%.
    steps = 40 if name.startswith("heun") else 300
    sigmas = karras_sigmas(steps, 0.002, 80.0)
    noise = torch.randn(20000, 2, generator=torch.Generator().manual_seed(0))
    x = _sampler(name)(
        gaussian_denoiser, noise, sigmas, generator=torch.Generator().manual_seed(1), **OPTIONS[name]
    )
    assert abs(x.mean().item() - MU) < 0.02
    assert abs(x.std().item() - STD) / STD < 0.03


def test_ddpm_on_its_own_respaced_grid(gaussian_denoiser):
    sigmas = DDPMSchedule("linear").sigmas_for_sampling(500)
    noise = torch.randn(20000, 2, generator=torch.Generator().manual_seed(0))
    x = ddpm(gaussian_denoiser, noise, sigmas, generator=torch.Generator().manual_seed(1))
    assert abs(x.mean().item() - MU) < 0.02 and abs(x.std().item() - STD) / STD < 0.03


def test_ddim_eta_zero_equals_euler(gaussian_denoiser):
    sigmas = karras_sigmas(15, 0.002, 80.0)
    noise = torch.randn(64, 3)
    assert torch.allclose(
        ddim(gaussian_denoiser, noise, sigmas), euler(gaussian_denoiser, noise, sigmas), atol=1e-5
    )


def test_heun_is_second_order(gaussian_denoiser):
    """Against the exact ODE solution, x0 = mu + (x_T - mu) std / sqrt(std^2 + sigma_max^2), Heun's error
    falls ~4x per doubling of steps and Euler's ~2x."""
    noise = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    exact = MU + (80.0 * noise - MU) * STD / (STD**2 + 80.0**2) ** 0.5
    errs = {}
    for steps in (24, 48):
        grid = karras_sigmas(steps, 0.002, 80.0)
        errs[steps] = [(f(gaussian_denoiser, noise, grid) - exact).abs().max().item() for f in (euler, heun)]
    assert errs[48][1] < errs[24][1] / 3 and errs[48][0] > errs[24][0] / 2.5
    assert errs[48][1] < errs[48][0] / 5


@pytest.mark.parametrize("steps", [50, 200])
def test_invert_then_decode_reconstructs(steps, gaussian_denoiser):
    x0 = MU + STD * torch.randn(128, 2, generator=torch.Generator().manual_seed(3))
    sigmas = karras_sigmas(steps, 0.002, 80.0)
    z = ddim_invert(gaussian_denoiser, x0, sigmas)
    assert abs(z.std().item() - 1) < 0.2  # unit scale noise
    rec = ddim(gaussian_denoiser, z, sigmas)
    assert (rec - x0).abs().max() < 10.0 / steps  # first order: error ~ 8/N measured here


def test_fixed_point_inversion_is_exact(gaussian_denoiser):
    x0 = MU + STD * torch.randn(128, 2, generator=torch.Generator().manual_seed(3))
    sigmas = karras_sigmas(30, 0.002, 80.0)
    z = ddim_invert(gaussian_denoiser, x0, sigmas, fixed_point_iters=20)
    assert (ddim(gaussian_denoiser, z, sigmas) - x0).abs().max() < 1e-3


def test_inversion_error_shrinks_like_one_over_n(gaussian_denoiser):
    x0 = MU + STD * torch.randn(128, 2, generator=torch.Generator().manual_seed(3))
    errs = []
    for steps in (25, 100):
        sigmas = karras_sigmas(steps, 0.002, 80.0)
        errs.append(
            (ddim(gaussian_denoiser, ddim_invert(gaussian_denoiser, x0, sigmas), sigmas) - x0).abs().max()
        )
    assert errs[1] < errs[0] / 2.5


# ---- contract suite: every sampler, the same checks ----


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_contract_shape_dtype_determinism(name, gaussian_denoiser):
    sigmas = karras_sigmas(5, 0.01, 10.0)
    noise = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    opts = {"s_churn": 5.0} if name == "heun" else {}
    a = SAMPLERS[name](
        gaussian_denoiser, noise, sigmas, None, generator=torch.Generator().manual_seed(7), **opts
    )
    b = SAMPLERS[name](
        gaussian_denoiser, noise, sigmas, None, generator=torch.Generator().manual_seed(7), **opts
    )
    assert a.shape == noise.shape and a.dtype == torch.float32 and torch.equal(a, b)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_contract_per_sample_generators_do_not_depend_on_batch(name, gaussian_denoiser):
    """Sample i from a batch with generators [g_0..g_B] equals the same sample drawn alone."""
    sigmas = karras_sigmas(5, 0.01, 10.0)
    seeds = [11, 12, 13]
    noise = torch.stack([torch.randn(2, 2, generator=torch.Generator().manual_seed(s)) for s in seeds])
    opts = {"s_churn": 5.0} if name == "heun" else {}
    gens = [torch.Generator().manual_seed(100 + s) for s in seeds]
    batch = SAMPLERS[name](gaussian_denoiser, noise, sigmas, generator=gens, **opts)
    alone = SAMPLERS[name](
        gaussian_denoiser, noise[1:2], sigmas, generator=[torch.Generator().manual_seed(112)], **opts
    )
    assert torch.allclose(batch[1:2], alone, atol=1e-6)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_contract_callback_and_cond_passthrough(name):
    seen = []

    def denoiser(x, sigma, cond):
        assert cond == {"label": "marker"}
        return torch.zeros_like(x)

    sigmas = karras_sigmas(3, 0.1, 1.0)
    SAMPLERS[name](denoiser, torch.randn(2, 2), sigmas, {"label": "marker"}, callback=seen.append)
    assert [s["i"] for s in seen][:3] == [0, 1, 2]
    assert all(set(s) == {"i", "x", "sigma", "denoised"} for s in seen)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_contract_correct_hook_replaces_x_after_every_step(name, gaussian_denoiser):
    sigmas = karras_sigmas(4, 0.1, 5.0)
    seen = []

    def correct(x, i, sigma_next):
        seen.append((i, float(sigma_next)))
        return torch.full_like(x, 0.25)

    x = SAMPLERS[name](
        gaussian_denoiser, torch.randn(2, 3), sigmas, generator=torch.Generator(), correct=correct
    )
    assert seen == [(i, float(sigmas[i + 1])) for i in range(4)]
    assert torch.equal(x, torch.full_like(x, 0.25))  # the last correction is the output


@pytest.mark.parametrize(
    "bad", [torch.tensor([1.0, 0.5]), torch.tensor([1.0, 2.0, 0.0]), torch.tensor([1.0])]
)
def test_bad_grids_are_refused(bad, gaussian_denoiser):
    with pytest.raises(VcdmError, match="sigmas"):
        euler(gaussian_denoiser, torch.randn(2, 2), bad)
