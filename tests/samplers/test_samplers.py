"""Analytic checks: on Gaussian data x0 ~ N(mu, std^2) the ideal denoiser is known and the probability-flow
ODE is solved in closed form, so every sampler must land on the data's mean and variance and the ODE
solvers on the exact solution; all of it in float64, so that only the discretisation and the Monte Carlo
error remain. A contract suite runs every sampler through the same checks."""

import inspect

import pytest
import torch

from vcdm.diffusion import DDPMSchedule, karras_sigmas
from vcdm.errors import VcdmError
from vcdm.samplers import (
    SAMPLER_NAMES,
    SAMPLERS,
    ddim,
    ddim_invert,
    ddpm,
    dpmpp_2m,
    dpmpp_2m_sde,
    euler,
    heun,
)

MU, STD = 0.3, 0.5
F64 = torch.float64
CHURN = {"s_churn": 10.0, "s_min": 0.05, "s_max": 50.0}


def _grid(steps):
    return karras_sigmas(steps, 0.002, 80.0).to(F64)


def _noise(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _exact_ode(noise, sigma_max=80.0):
    """x0 of the probability-flow ODE from x_T = sigma_max noise: x(sigma) - mu scales like sqrt(std^2 + sigma^2)."""
    return MU + (sigma_max * noise - MU) * STD / (STD**2 + sigma_max**2) ** 0.5


# ---- the stochastic samplers land on the data's moments ----


# (sampler, options, steps, tolerance on the relative std error): the first-order samplers' discretisation
# bias is ~6/N on the std (-2% for DDPM at 300 steps), the second-order ones' under 1% at 100 steps; the
# Monte Carlo error of 40000 samples is 0.0025 on the mean and 0.35% on the std.
STOCHASTIC = {
    "ddpm": (ddpm, {}, 300, 0.03),
    "ddim_eta_half": (ddim, {"eta": 0.5}, 300, 0.02),
    "heun_churn": (heun, CHURN, 100, 0.012),
    "dpmpp_2m_sde": (dpmpp_2m_sde, {}, 100, 0.012),
    "dpmpp_2m_sde_eta_half": (dpmpp_2m_sde, {"eta": 0.5}, 100, 0.012),
}


@pytest.mark.parametrize("name", list(STOCHASTIC))
def test_stochastic_sampler_reproduces_gaussian_moments(name, gaussian_denoiser):
    fn, options, steps, std_tol = STOCHASTIC[name]
    noise = _noise(20000, 2)
    x = fn(gaussian_denoiser, noise, _grid(steps), generator=torch.Generator().manual_seed(1), **options)
    assert x.dtype == F64
    assert abs(x.mean().item() - MU) < 0.01
    assert abs(x.std().item() - STD) / STD < std_tol


def test_ddpm_on_its_own_respaced_grid(gaussian_denoiser):
    sigmas = DDPMSchedule("linear").sigmas_for_sampling(500).to(F64)
    x = ddpm(gaussian_denoiser, _noise(20000, 2), sigmas, generator=torch.Generator().manual_seed(1))
    assert abs(x.mean().item() - MU) < 0.01 and abs(x.std().item() - STD) / STD < 0.025


# ---- the deterministic samplers follow the exact ODE solution ----


@pytest.mark.parametrize("fn, steps", [(euler, 300), (ddim, 300), (heun, 40), (dpmpp_2m, 40)])
def test_deterministic_sampler_follows_the_exact_ode(fn, steps, gaussian_denoiser):
    """With the linear Gaussian denoiser every ODE solver maps x_T linearly, x0 - mu = k (x_T - mu), like the
    exact solution; only its gain k is off, by the discretisation (~1% here: first order at 300 steps,
    second order at 40)."""
    noise = _noise(4096, 2)
    gain = (fn(gaussian_denoiser, noise, _grid(steps)) - MU) / (_exact_ode(noise) - MU)
    assert gain.max() - gain.min() < 1e-9
    assert abs(gain.mean().item() - 1) < 0.012


def test_ddim_eta_zero_equals_euler(gaussian_denoiser):
    sigmas, noise = _grid(15), _noise(64, 3)
    ref = euler(gaussian_denoiser, noise, sigmas)
    assert torch.allclose(ddim(gaussian_denoiser, noise, sigmas), ref, rtol=0, atol=1e-12)


def _errors(fns, steps, gaussian_denoiser, noise):
    """The largest error against the exact ODE solution, per sampler, per number of steps."""
    return {
        n: [(f(gaussian_denoiser, noise, _grid(n)) - _exact_ode(noise)).abs().max().item() for f in fns]
        for n in steps
    }


def test_heun_and_dpmpp_2m_are_second_order(gaussian_denoiser):
    """Error ratios when the steps double: ~4 for Heun and DPM-Solver++(2M), ~2 for Euler."""
    errs = _errors((euler, heun, dpmpp_2m), (24, 48, 96), gaussian_denoiser, _noise(256, 2))
    for coarse, fine in ((24, 48), (48, 96)):
        ratio_euler, ratio_heun, ratio_dpm = (a / b for a, b in zip(errs[coarse], errs[fine]))
        assert 1.8 < ratio_euler < 2.2
        assert 3.5 < ratio_heun < 4.8 and 3.5 < ratio_dpm < 4.8
    # One denoiser call per step (Heun: two), yet 8x more accurate than Euler at 48 steps.
    assert errs[48][2] < errs[48][0] / 6


# ---- DPM-Solver++ ----


def test_dpmpp_first_steps_are_euler_and_ddpm(gaussian_denoiser):
    """On [sigma, sigma', 0] there is no history: 2M's first step is first order (= Euler / DDIM), the SDE
    variant's with eta = 1 is DDPM's posterior step, and the last step returns x0_hat."""
    sigmas, noise = _grid(2), _noise(64, 3)
    assert torch.allclose(
        dpmpp_2m(gaussian_denoiser, noise, sigmas),
        euler(gaussian_denoiser, noise, sigmas),
        rtol=0,
        atol=1e-12,
    )
    sde = dpmpp_2m_sde(gaussian_denoiser, noise, sigmas, generator=torch.Generator().manual_seed(5))
    anc = ddpm(gaussian_denoiser, noise, sigmas, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(sde, anc, rtol=0, atol=1e-12)


def test_dpmpp_sde_with_eta_zero_is_the_ode_solver(gaussian_denoiser):
    sigmas, noise = _grid(12), _noise(64, 3)
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    sde = dpmpp_2m_sde(gaussian_denoiser, noise, sigmas, generator=gen, eta=0.0)
    assert torch.equal(sde, dpmpp_2m(gaussian_denoiser, noise, sigmas))
    assert torch.equal(gen.get_state(), state)  # and it draws no noise


# ---- inversion ----


@pytest.mark.parametrize("steps", [50, 200])
def test_invert_then_decode_reconstructs(steps, gaussian_denoiser):
    x0 = MU + STD * _noise(128, 2, seed=3)
    sigmas = _grid(steps)
    z = ddim_invert(gaussian_denoiser, x0, sigmas)
    assert z.dtype == F64 and abs(z.std().item() - 1) < 0.2  # unit scale noise
    rec = ddim(gaussian_denoiser, z, sigmas)
    assert (rec - x0).abs().max() < 10.0 / steps  # first order: error ~ 8/N measured here


def test_fixed_point_inversion_is_exact(gaussian_denoiser):
    x0 = MU + STD * _noise(128, 2, seed=3)
    sigmas = _grid(30)
    z = ddim_invert(gaussian_denoiser, x0, sigmas, fixed_point_iters=40)
    assert (ddim(gaussian_denoiser, z, sigmas) - x0).abs().max() < 1e-9


def test_inversion_error_shrinks_like_one_over_n(gaussian_denoiser):
    x0 = MU + STD * _noise(128, 2, seed=3)
    errs = []
    for steps in (25, 100):
        sigmas = _grid(steps)
        errs.append(
            (ddim(gaussian_denoiser, ddim_invert(gaussian_denoiser, x0, sigmas), sigmas) - x0).abs().max()
        )
    assert errs[1] < errs[0] / 2.5


# ---- contract suite: every sampler, the same checks ----

CONTRACT_OPTIONS = {"heun": {"s_churn": 5.0}}


def test_sampler_names_are_the_registry():
    assert SAMPLER_NAMES == tuple(SAMPLERS)
    assert {"ddpm", "ddim", "euler", "heun", "dpmpp_2m", "dpmpp_2m_sde"} <= set(SAMPLER_NAMES)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_contract_signature(name):
    params = inspect.signature(SAMPLERS[name]).parameters
    assert list(params)[:7] == ["denoiser", "noise", "sigmas", "cond", "generator", "callback", "correct"]
    assert all(p.kind is p.KEYWORD_ONLY for p in list(params.values())[4:])
    with pytest.raises(TypeError):
        SAMPLERS[name](lambda x, s, c: x, torch.randn(1, 2), _grid(2), no_such_option=1)


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_contract_computes_in_the_noise_dtype(name, dtype, gaussian_denoiser):
    """The denoiser sees x and sigma in the noise's dtype, and the sample comes back in it (shape too)."""
    seen = set()

    def denoiser(x, sigma, cond):
        seen.add((x.dtype, sigma.dtype, sigma.shape))
        return gaussian_denoiser(x, sigma, cond)

    sigmas = karras_sigmas(5, 0.01, 10.0)  # float32: converted to the noise's dtype
    noise = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0)).to(dtype)
    opts = CONTRACT_OPTIONS.get(name, {})
    x = SAMPLERS[name](denoiser, noise, sigmas, None, generator=torch.Generator().manual_seed(7), **opts)
    assert x.shape == noise.shape and x.dtype == dtype and x.isfinite().all()
    assert seen == {(dtype, dtype, (4,))}
    # the same sample as in float64, to the dtype's precision (fresh noise is drawn in the dtype, so only the
    # deterministic samplers are compared)
    if name in ("ddim", "euler", "dpmpp_2m"):
        ref = SAMPLERS[name](gaussian_denoiser, noise.to(F64), sigmas)
        assert torch.allclose(x.to(F64), ref, rtol=0, atol=50 * torch.finfo(dtype).eps)
    if dtype == torch.float32:  # deterministic given the generator
        again = SAMPLERS[name](
            denoiser, noise, sigmas, None, generator=torch.Generator().manual_seed(7), **opts
        )
        assert torch.equal(x, again)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_inversion_computes_in_the_input_dtype(dtype, gaussian_denoiser):
    seen = set()

    def denoiser(x, sigma, cond):
        seen.add((x.dtype, sigma.dtype))
        return gaussian_denoiser(x, sigma, cond)

    z = ddim_invert(denoiser, torch.randn(4, 3).to(dtype), karras_sigmas(5, 0.01, 10.0), fixed_point_iters=1)
    assert z.dtype == dtype and seen == {(dtype, dtype)}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_contract_output_of_another_dtype_is_cast_back(name, gaussian_denoiser):
    def float32_denoiser(x, sigma, cond):
        return gaussian_denoiser(x, sigma, cond).float()

    def float32_correct(x, i, sigma_next):
        return x.float()

    noise = torch.randn(2, 3).to(torch.bfloat16)
    x = SAMPLERS[name](float32_denoiser, noise, karras_sigmas(4, 0.01, 10.0), generator=torch.Generator())
    assert x.dtype == torch.bfloat16
    x = SAMPLERS[name](gaussian_denoiser, noise, karras_sigmas(4, 0.01, 10.0), correct=float32_correct)
    assert x.dtype == torch.bfloat16


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_contract_per_sample_generators_do_not_depend_on_batch(name, gaussian_denoiser):
    """Sample i from a batch with generators [g_0..g_B] equals the same sample drawn alone."""
    sigmas = karras_sigmas(5, 0.01, 10.0)
    seeds = [11, 12, 13]
    noise = torch.stack([_noise(2, 2, seed=s) for s in seeds])
    opts = CONTRACT_OPTIONS.get(name, {})
    gens = [torch.Generator().manual_seed(100 + s) for s in seeds]
    batch = SAMPLERS[name](gaussian_denoiser, noise, sigmas, generator=gens, **opts)
    alone = SAMPLERS[name](
        gaussian_denoiser, noise[1:2], sigmas, generator=[torch.Generator().manual_seed(112)], **opts
    )
    assert torch.allclose(batch[1:2], alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_contract_callback_and_cond_passthrough(name):
    seen = []

    def denoiser(x, sigma, cond):
        assert cond == {"label": "marker"}
        return torch.zeros_like(x)

    sigmas = karras_sigmas(3, 0.1, 1.0)
    SAMPLERS[name](denoiser, torch.randn(2, 2), sigmas, {"label": "marker"}, callback=seen.append)
    assert [s["i"] for s in seen] == [0, 1, 2]
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
    "bad", [torch.tensor([1.0, 0.5]), torch.tensor([1.0, 2.0, 0.0]), torch.tensor([1.0]), torch.ones(2, 2)]
)
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_bad_grids_are_refused(bad, name, gaussian_denoiser):
    with pytest.raises(VcdmError, match="sigmas"):
        SAMPLERS[name](gaussian_denoiser, torch.randn(2, 2), bad)


def test_grid_whose_levels_merge_in_the_dtype_is_refused(gaussian_denoiser):
    sigmas = torch.tensor([10.001, 10.0, 0.0], dtype=F64)  # distinct in float64, one level in bfloat16
    euler(gaussian_denoiser, torch.randn(2, 2, dtype=F64), sigmas)
    with pytest.raises(VcdmError, match="bfloat16"):
        euler(gaussian_denoiser, torch.randn(2, 2).to(torch.bfloat16), sigmas)
