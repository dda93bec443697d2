"""The KL autoencoder's network: shapes at f = 4 and 8, the KL term against its closed form, the posterior
sample, the patch discriminator and its hinge loss."""

import pytest
import torch

from vcdm.errors import VcdmError
from vcdm.networks.autoencoder import (
    AutoencoderConfig,
    KLAutoencoder,
    PatchDiscriminator,
    hinge_d_loss,
    kl_divergence,
    sample_posterior,
)


@pytest.mark.parametrize("factor", [4, 8])
def test_encoder_and_decoder_shapes(factor):
    torch.manual_seed(0)
    cfg = AutoencoderConfig(factor=factor, latent_channels=3, base_channels=8, image_size=16, in_channels=3)
    ae = KLAutoencoder(cfg)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    mu, logvar = ae.encode(x)
    assert (
        mu.shape
        == logvar.shape
        == (2, 3, 16 // factor, 16 // factor)
        == (2, *[3, cfg.latent_size] + [cfg.latent_size])
    )
    assert ae.decode(mu).shape == x.shape
    x_rec, _, _ = ae(x, torch.Generator().manual_seed(0))
    assert x_rec.shape == x.shape
    assert len(cfg.channels) == {4: 3, 8: 4}[factor]  # one level per halving, plus the first
    assert ae.decode(torch.zeros(1, 3, 3, 5)).shape == (1, 3, 3 * factor, 5 * factor)  # any latent grid


def test_bad_inputs_and_configs_name_the_field():
    ae = KLAutoencoder(AutoencoderConfig(factor=4, base_channels=8, image_size=16, in_channels=1))
    with pytest.raises(VcdmError, match="multiples of 4"):
        ae.encode(torch.zeros(1, 1, 18, 18))
    with pytest.raises(VcdmError, match="autoencoder.net.factor"):
        AutoencoderConfig(factor=3)
    with pytest.raises(VcdmError, match="autoencoder.net.image_size"):
        AutoencoderConfig(factor=8, image_size=20)


def test_kl_matches_its_closed_form_and_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(kl_divergence(mu, logvar).double(), expected, rtol=1e-6, atol=1e-6)
    # zero exactly at the prior, and positive elsewhere
    assert kl_divergence(torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)).abs().max() == 0
    assert (kl_divergence(mu, logvar) > 0).all()


def test_posterior_sample_has_the_posterior_moments_and_is_the_mean_without_a_generator():
    mu, logvar = (
        torch.full((1, 1, 100, 100), 0.7),
        torch.full((1, 1, 100, 100), 2 * torch.log(torch.tensor(0.3))),
    )
    assert sample_posterior(mu, logvar, None) is mu
    z = sample_posterior(mu, logvar, torch.Generator().manual_seed(0))
    assert abs(z.mean() - 0.7) < 0.01 and abs(z.std() - 0.3) < 0.01
    again = sample_posterior(mu, logvar, torch.Generator().manual_seed(0))
    assert torch.equal(z, again)


def test_patch_discriminator_gives_one_logit_per_patch_and_the_hinge_loss():
    d = PatchDiscriminator(3, channels=8, layers=2)
    out = d(torch.zeros(2, 3, 16, 16))
    assert out.shape[:2] == (2, 1) and out.shape[-1] > 1  # a grid of patch logits
    real, fake = torch.tensor([[2.0, 0.5]]), torch.tensor([[-2.0, 0.0]])
    # 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake))) = 0.5 * (0.25 + 0.5)
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor([0.375]))
