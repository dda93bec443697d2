import pytest
import torch

from vcdm.diffusion import (
    DDPMSchedule,
    EDMPrecond,
    EpsPrecond,
    ResidualDenoiser,
    edm_coefficients,
    edm_sigma_weight,
    karras_sigmas,
)
from vcdm.errors import VcdmError
from vcdm.networks import PriorConfig, PriorTransformer, UNet, UNetConfig
from vcdm.samplers import SAMPLERS

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


def test_residual_denoiser_denoises_the_residual_over_the_base():
    net = _Recorder()
    d = ResidualDenoiser(EDMPrecond(net, sigma_data=0.1))
    x, base = torch.randn(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    sigma = torch.tensor([0.01, 0.1, 10.0])
    c_skip, _, c_in, _ = edm_coefficients(sigma, 0.1)
    out = d(x, sigma, {"base": base})
    # the inner denoiser sees x - base; its (skip-path) estimate of the residual is added back to the base
    torch.testing.assert_close(net.seen[0], c_in.view(-1, 1, 1, 1) * (x - base))
    torch.testing.assert_close(out, base + c_skip.view(-1, 1, 1, 1) * (x - base))
    # at a noise level far above the residual's std the estimate is the base itself
    torch.testing.assert_close(d(x, torch.full((3,), 1e4), {"base": base}), base, atol=1e-6, rtol=0)
    with pytest.raises(VcdmError, match=r"cond\['base'\]"):
        d(x, sigma, {})


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


class _Float32Net(torch.nn.Module):
    """A network with float32 weights that records the dtypes it is fed."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.7))
        self.seen = set()

    def forward(self, x, c, cond):
        self.seen.add((x.dtype, c.dtype))
        return self.scale * x + c.reshape(-1, *([1] * (x.ndim - 1)))


def _adapters(net):
    return [
        EDMPrecond(net, 0.5),
        EDMPrecond(net, 1.0, kind="x0"),
        EpsPrecond(net, DDPMSchedule("linear", 1000)),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_adapters_return_x_dtype_and_feed_the_network_float32(dtype):
    """The denoiser contract (vcdm.samplers.common): x0_hat in x's dtype; the network still runs in float32."""
    net = _Float32Net()
    x = torch.randn(3, 1, 4, 4).to(dtype)
    for d in _adapters(net):
        out = d(x, torch.tensor([0.1, 1.0, 10.0], dtype=dtype))
        assert out.dtype == dtype and out.shape == x.shape and out.isfinite().all()
        assert d(x, torch.tensor(2.0)).dtype == dtype  # a scalar sigma, of another dtype
    assert net.seen == {(torch.float32, torch.float32)}


def test_edm_precond_computes_in_float64_for_float64_input():
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    c_skip, _, _, _ = edm_coefficients(sigma, 0.5)
    assert torch.equal(EDMPrecond(_Recorder(), 0.5)(x, sigma), c_skip.view(-1, 1, 1, 1) * x)
    # float32 input: the float32 result, unchanged
    c32 = edm_coefficients(sigma.float(), 0.5)[0]
    assert torch.equal(
        EDMPrecond(_Recorder(), 0.5)(x.float(), sigma.float()), c32.view(-1, 1, 1, 1) * x.float()
    )


def test_eps_adapter_in_float64_keeps_the_skip_path_exact():
    """x - sigma * eps is formed in float64: with a zero network the float64 input comes back bit for bit."""

    class Zero(torch.nn.Module):
        def forward(self, x_vp, t, cond):
            return torch.zeros_like(x_vp)

    x = torch.randn(2, 3, dtype=torch.float64)
    assert torch.equal(EpsPrecond(Zero(), DDPMSchedule("cosine", 1000))(x, torch.tensor([0.5, 3.0])), x)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_samplers_keep_the_dtype_through_real_networks(dtype):
    torch.manual_seed(0)
    unet = UNet(UNetConfig(image_size=4, base_channels=8, channel_mults=(1, 2)))
    prior = PriorTransformer(PriorConfig(emb_dim=4, width=16, depth=1, heads=2))
    sigmas = karras_sigmas(2, 0.01, 10.0)
    for denoiser, shape in ((EDMPrecond(unet, 0.5), (2, 1, 4, 4)), (EDMPrecond(prior, 1.0), (2, 4))):
        for name, sampler in SAMPLERS.items():
            x = sampler(denoiser, torch.randn(shape).to(dtype), sigmas, generator=torch.Generator())
            assert x.dtype == dtype and x.isfinite().all(), name
