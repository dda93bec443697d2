"""RePaint: the resampling walk, known-region replacement on every sampler, and its limits."""

import pytest
import torch

from vcdm.diffusion import karras_sigmas
from vcdm.editing import repaint, repaint_walk, walk_steps
from vcdm.errors import VcdmError
from vcdm.samplers import SAMPLERS
from vcdm.samplers.common import SamplerRun

SIGMAS = karras_sigmas(8, 0.002, 80.0, 7.0)


def _gens(seed: int, n: int = 3) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def _half_mask(n: int = 3) -> torch.Tensor:
    mask = torch.zeros(n, 1, 8, 8)
    mask[..., :, :4] = 1  # fill the left half
    return mask


def test_walk_without_resampling_is_the_plain_grid():
    assert repaint_walk(6, 2, 1) == list(range(7))


def test_walk_jumps_back_and_counts_steps():
    walk = repaint_walk(6, 2, 3)
    assert walk[:7] == [0, 1, 2, 0, 1, 2, 0]
    # jump points at 2 and 4, each revisited twice more: 6 + 2 * 2 * 2 steps
    assert walk_steps(walk) == 6 + 2 * 2 * 2 and walk[-1] == 6
    for a, b in zip(walk, walk[1:]):
        assert b == a + 1 or b < a


@pytest.mark.parametrize("args", [(0, 1, 1), (4, 0, 1), (4, 1, 0), (4, 1.5, 1)])
def test_walk_rejects_bad_settings(args):
    with pytest.raises(VcdmError, match="RePaint"):
        repaint_walk(*args)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_known_pixels_are_preserved_exactly(name, dtype, gaussian_denoiser):
    known = torch.rand(3, 2, 8, 8, dtype=torch.float64) * 2 - 1
    noise = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=dtype)
    mask = _half_mask()
    out = repaint(SAMPLERS[name], gaussian_denoiser, noise, SIGMAS, known=known, mask=mask, generator=_gens(1),
                  known_generator=_gens(2), jump_length=2, resamplings=3)  # fmt: skip
    assert out.dtype == dtype
    keep = (mask == 0).expand_as(out)
    assert torch.equal(out[keep], known.to(dtype)[keep])
    assert not torch.allclose(out[~keep], known.to(dtype)[~keep], atol=1e-3)  # the hole was generated


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_all_known_returns_the_input(name, gaussian_denoiser):
    known = torch.rand(3, 1, 8, 8) * 2 - 1
    noise = torch.randn(3, 1, 8, 8)
    out = repaint(SAMPLERS[name], gaussian_denoiser, noise, SIGMAS, known=known, mask=torch.zeros(1, 1, 8, 8),
                  generator=_gens(1), known_generator=_gens(2))  # fmt: skip
    assert torch.equal(out, known)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_all_unknown_equals_plain_sampling(name, gaussian_denoiser):
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    plain = SAMPLERS[name](gaussian_denoiser, noise, SIGMAS, generator=_gens(1))
    out = repaint(SAMPLERS[name], gaussian_denoiser, noise, SIGMAS, known=torch.zeros(3, 1, 8, 8),
                  mask=torch.ones(3, 1, 8, 8), generator=_gens(1), known_generator=_gens(2))  # fmt: skip
    assert torch.equal(out, plain)


def test_resampling_costs_model_calls(gaussian_denoiser):
    noise, known, mask = torch.randn(3, 1, 8, 8), torch.zeros(3, 1, 8, 8), _half_mask()
    repaint(SAMPLERS["euler"], gaussian_denoiser, noise, SIGMAS, known=known, mask=mask, generator=_gens(1),
            known_generator=_gens(2), jump_length=2, resamplings=3)  # fmt: skip
    assert gaussian_denoiser.calls == walk_steps(repaint_walk(8, 2, 3)) == 8 + 3 * 2 * 2


def test_walk_renoises_and_restarts_multistep_history():
    sigmas = torch.tensor([4.0, 2.0, 1.0, 0.0])
    run = SamplerRun(None, torch.zeros(1, 1), sigmas, generator=torch.Generator().manual_seed(0),
                     walk=[0, 1, 2, 1, 2, 3])  # fmt: skip
    seen = []

    def step(i, x, sigma, sigma_next):
        seen.append((i, run.continues(i), float(x.abs().sum() > 0)))
        return x * 0 if i == 1 else x

    run.loop(step)
    # step 1 continues step 0; after the jump from position 2 back to 1, step 1 does not continue anything
    assert [s[:2] for s in seen] == [(0, False), (1, True), (1, False), (2, True)]
    assert seen[2][2] == 1.0  # the jump added noise of std sqrt(2^2 - 1^2) to the zeroed sample


@pytest.mark.parametrize("walk", [[1, 2, 3], [0, 2, 3], [0, 1, 2], [0, 1, 4, 3]])
def test_bad_walks_are_refused(walk, gaussian_denoiser):
    with pytest.raises(VcdmError, match="walk"):
        SAMPLERS["euler"](gaussian_denoiser, torch.randn(1, 2), torch.tensor([2.0, 1.0, 0.5, 0.0]), walk=walk)


def test_repaint_needs_matching_shapes(gaussian_denoiser):
    with pytest.raises(VcdmError, match="mask"):
        repaint(SAMPLERS["euler"], gaussian_denoiser, torch.randn(3, 1, 8, 8), SIGMAS, known=torch.zeros(3, 1, 8, 8),
                mask=torch.ones(3, 1, 4, 4), generator=_gens(1), known_generator=_gens(2))  # fmt: skip
