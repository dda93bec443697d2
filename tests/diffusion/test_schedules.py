import pytest
import torch

from vcdm.diffusion import DDPMSchedule, ddpm_betas, karras_sigmas
from vcdm.errors import VcdmError


def test_karras_sigmas_endpoints_and_order():
    s = karras_sigmas(18, 0.002, 80.0)
    assert s.shape == (19,) and s.dtype == torch.float32
    assert s[-1] == 0
    assert torch.isclose(s[0], torch.tensor(80.0)) and torch.isclose(s[-2], torch.tensor(0.002))
    assert (s[:-1] > s[1:]).all()


def test_karras_sigmas_rho_one_is_linear():
    s = karras_sigmas(5, 1.0, 5.0, rho=1.0)
    assert torch.allclose(s, torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0]))


def test_karras_sigmas_rejects_bad_arguments():
    with pytest.raises(VcdmError, match="num_steps"):
        karras_sigmas(0, 0.002, 80)
    with pytest.raises(VcdmError, match="sigma_min"):
        karras_sigmas(10, 1.0, 0.5)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddpm_schedule_round_trip(kind):
    sched = DDPMSchedule(kind, 1000)
    t = torch.tensor([0.0, 1.5, 10.25, 500.0, 998.9])
    assert torch.allclose(sched.t_of_sigma(sched.sigma_of_t(t)), t, atol=1e-3)
    # discrete levels map to integer timesteps
    ti = torch.tensor([0, 7, 999])
    assert torch.allclose(sched.t_of_sigma(sched.sigmas[ti].float()), ti.float(), atol=1e-3)
    assert (sched.sigmas[1:] > sched.sigmas[:-1]).all()


def test_ddpm_betas_match_the_papers():
    lin = ddpm_betas("linear", 1000)
    assert lin[0].item() == pytest.approx(1e-4) and lin[-1].item() == pytest.approx(0.02)
    cos = ddpm_betas("cosine", 1000)
    # Nichol & Dhariwal: alpha_bar(0) is ~1 and the last beta is clipped at 0.999
    assert cos[0].item() < 1e-4 and cos[-1].item() == pytest.approx(0.999)
    with pytest.raises(VcdmError, match="beta schedule"):
        ddpm_betas("quadratic")


def test_sampling_grid_is_decreasing_and_ends_in_zero():
    s = DDPMSchedule("linear").sigmas_for_sampling(50)
    assert s.shape == (51,) and s[-1] == 0 and (s[:-1] > s[1:]).all()
