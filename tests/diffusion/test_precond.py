import pytest
import torch

from vcdm.diffusion import DDPMSchedule, EDMPrecond, EpsPrecond, edm_coefficients, edm_sigma_weight
from vcdm.errors import VcdmError

SIGMAS = torch.tensor([0.002, 0.1, 0.5, 1.0, 10.0, 80.0], dtype=torch.float64)


@pytest.mark.parametrize("sd", [0.5, 1.0])
def test_edm_coefficients_identities(sd):
    c_skip, c_out, c_in, c_noise = edm_coefficients(SIGMAS, sd)
    # unit-variance network input (Karras et al. 2022, Appendix B.6)
    assert torch.allclose(c_in**2 * (SIGMAS**2 + sd**2), torch.ones_like(SIGMAS))
    # unit-variance training target F = (x0 - c_skip (x0 + sigma n)) / c_out
    target_var = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * SIGMAS**2) / c_out**2
    assert torch.allclose(target_var, torch.ones_like(SIGMAS))
    # lambda(sigma) c_out^2 = 1: uniform effective weight over noise levels
    assert torch.allclose(edm_sigma_weight(SIGMAS, sd) * c_out**2, torch.ones_like(SIGMAS))
    assert torch.allclose(c_noise, SIGMAS.log() / 4)


def test_x0_kind_has_no_skip():
    c_skip, c_out, _, _ = edm_coefficients(SIGMAS, 1.0, "x0")
    assert (c_skip == 0).all() and (c_out == 1).all()
    with pytest.raises(VcdmError, match="precond kind"):
        edm_coefficients(SIGMAS, 1.0, "v")


class _Recorder(torch.nn.Module):
    def forward(self, x, c_noise, cond):
        self.seen = (x.clone(), c_noise.clone())
        return torch.zeros_like(x)


def test_edm_precond_with_zero_net_is_the_skip_path():
    net = _Recorder()
    d = EDMPrecond(net, sigma_data=0.5)
    x = torch.randn(3, 1, 4, 4)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    out = d(x, sigma)
    c_skip, _, c_in, c_noise = edm_coefficients(sigma, 0.5)
    assert torch.allclose(out, c_skip.view(-1, 1, 1, 1) * x)
    assert torch.allclose(net.seen[0], c_in.view(-1, 1, 1, 1) * x)
    assert torch.allclose(net.seen[1], c_noise)


def test_eps_adapter_with_oracle_noise_returns_x0():
    """An epsilon network that knows the true noise makes the adapter return x0 exactly."""
    sched = DDPMSchedule("cosine", 1000)
    x0 = torch.randn(4, 2, 3, 3)
    n = torch.randn_like(x0)
    sigma = torch.tensor([0.05, 0.7, 3.0, 40.0])
    x = x0 + sigma.view(-1, 1, 1, 1) * n

    class Oracle(torch.nn.Module):
        def forward(self, x_vp, t, cond):
            s = sched.sigma_of_t(t).view(-1, 1, 1, 1)
            ab = 1 / (1 + s**2)
            # the VP input is sqrt(ab) x0 + sqrt(1 - ab) n when t matches sigma
            return (x_vp - ab.sqrt() * x0) / (1 - ab).sqrt()

    d = EpsPrecond(Oracle(), sched)
    assert torch.allclose(d(x, sigma), x0, atol=1e-4)
