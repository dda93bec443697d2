import torch

from vcdm.diffusion import DDPMSchedule, EDMPrecond, EpsPrecond, ddpm_loss, edm_loss


def test_edm_loss_is_zero_for_an_oracle_and_deterministic():
    x0 = torch.randn(8, 1, 4, 4)
    oracle = lambda x, sigma, cond: x0  # noqa: E731
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(edm_loss(oracle, x0, None, g), torch.zeros(8))
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    net = EDMPrecond(lambda x, c_noise, cond: conv(x), sigma_data=0.5)
    losses = [edm_loss(net, x0, None, torch.Generator().manual_seed(1)) for _ in range(2)]
    assert losses[0].shape == (8,) and torch.equal(losses[0], losses[1]) and (losses[0] > 0).all()


def test_edm_loss_of_identity_denoiser_is_lambda_sigma_squared():
    """D(x) = x gives error sigma^2 |n|^2; with lambda this is (sigma^2 + sd^2) / sd^2 * mean(n^2)."""
    x0 = torch.zeros(2000, 64)
    g = torch.Generator().manual_seed(0)
    loss = edm_loss(lambda x, s, c: x, x0, None, g, weighting="uniform", p_mean=0.0, p_std=1e-6)
    assert abs(loss.mean().item() - 1.0) < 0.01  # sigma = 1, E[n^2] = 1


def test_ddpm_loss_zero_for_oracle_eps():
    sched = DDPMSchedule("linear", 100)
    x0 = torch.randn(6, 3)
    g = torch.Generator().manual_seed(0)

    class Oracle(torch.nn.Module):
        def forward(self, x_t, t, cond):
            ab = sched.alpha_bar[t.long()].float().view(-1, 1)
            return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    loss = ddpm_loss(EpsPrecond(Oracle(), sched), x0, None, g)
    assert loss.shape == (6,) and loss.max() < 1e-8
