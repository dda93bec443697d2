"""bench/nfe_study.py's helpers: the steps for a target NFE and the NFE it reports match the samplers' calls."""

import pytest
import torch

from vcdm.diffusion import karras_sigmas
from vcdm.samplers import SAMPLERS


@pytest.fixture(scope="module")
def nfe_study(load_bench):
    return load_bench("nfe_study")


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("target", [1, 5, 10, 20, 35])
def test_counted_calls_match_the_nfe_formula(nfe_study, gaussian_denoiser, sampler, target):
    steps = nfe_study.steps_for_nfe(sampler, target)
    assert nfe_study.nfe_of(sampler, steps) <= max(target, 1)
    counter = nfe_study.CountCalls()
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    SAMPLERS[sampler](counter(gaussian_denoiser), noise, karras_sigmas(steps, 0.002, 80.0),
                      generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert counter.calls == gaussian_denoiser.calls == nfe_study.nfe_of(sampler, steps)


def test_heun_takes_the_most_steps_within_the_budget(nfe_study):
    assert [nfe_study.steps_for_nfe("heun", n) for n in (5, 10, 20, 35)] == [3, 5, 10, 18]
    assert [nfe_study.steps_for_nfe("euler", n) for n in (5, 10, 20, 35)] == [5, 10, 20, 35]
