"""The loop's faster pieces compute exactly what the straightforward versions computed (issue "Speed").

End to end, `bench/train_loop_speed.py --check-identical` trains decoders with the loop before and after
and compares the weights with torch.equal.
"""

import copy

import pytest
import torch
from torch import nn

from vcdm.seeding import DATA_ORDER, mix_seed
from vcdm.training.ema import EMA
from vcdm.training.loop import _seed_step_rng, _to_batch, batch_indices


def _batch_indices_reference(num, nimg, batch, seed):
    """The loop's data order as first written: a fresh permutation of the epoch for every batch."""
    out, pos = [], nimg
    while len(out) < batch:
        epoch, offset = divmod(pos, num)
        perm = torch.randperm(num, generator=torch.Generator().manual_seed(mix_seed(seed, DATA_ORDER, epoch)))
        take = perm[offset : offset + batch - len(out)]
        out.extend(take.tolist())
        pos += len(take)
    return torch.tensor(out, dtype=torch.long)


@pytest.mark.parametrize(("num", "batch"), [(10, 4), (10, 10), (7, 16), (1, 3), (1000, 64)])
def test_batch_indices_match_the_reference(num, batch):
    for seed in (0, 5):
        for nimg in range(0, 3 * num + batch, max(1, batch // 2)):
            got = batch_indices(num, nimg, batch, seed)
            assert got.dtype == torch.long
            expected = _batch_indices_reference(num, nimg, batch, seed)
            assert torch.equal(got, expected), (num, batch, seed, nimg)


def test_batch_indices_are_a_copy_of_the_cached_permutation():
    first = batch_indices(50, 0, 50, 1)
    first.fill_(-1)  # a caller writing into its indices must not change the next epoch's batches
    assert torch.equal(batch_indices(50, 0, 50, 1), _batch_indices_reference(50, 0, 50, 1))


def test_to_batch_matches_plain_indexing_and_conversion():
    g = torch.Generator().manual_seed(0)
    data = {
        "image": torch.randint(0, 256, (40, 1, 5, 5), generator=g, dtype=torch.uint8),
        "emb": torch.randn(40, 8, generator=g),
        "label": torch.randint(0, 10, (40,), generator=g),
    }
    data["image"][0] = torch.arange(25, dtype=torch.uint8).reshape(1, 5, 5) * 10  # plenty of distinct values
    idx = torch.tensor([3, 0, 39, 3, 17])
    got = _to_batch(data, idx, torch.device("cpu"))
    assert torch.equal(got["image"], data["image"][idx].float() / 127.5 - 1)
    assert torch.equal(got["emb"], data["emb"][idx]) and torch.equal(got["label"], data["label"][idx])
    all_bytes = torch.arange(256, dtype=torch.uint8).reshape(256, 1, 1, 1)
    full = _to_batch({"image": all_bytes}, torch.arange(256), torch.device("cpu"))["image"]
    assert torch.equal(full, all_bytes.float() / 127.5 - 1)


def test_step_seed_gives_the_dropout_of_torch_manual_seed_and_is_restored():
    x = torch.ones(10_000)
    before = torch.get_rng_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix_seed(0, 64, 0, 1))
        expected = nn.functional.dropout(x, 0.3)
    with torch.random.fork_rng(devices=[]):
        _seed_step_rng(mix_seed(0, 64, 0, 1), torch.device("cpu"))
        got = nn.functional.dropout(x, 0.3)
    assert torch.equal(got, expected)
    assert torch.equal(torch.get_rng_state(), before)


class _WithBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 5)
        self.bn = nn.BatchNorm1d(5)  # float buffers and an int64 counter
        self.out = nn.Linear(5, 3, bias=False).double()

    def forward(self, x):
        return self.out(self.bn(self.lin(x)).double())


def test_ema_update_matches_a_loop_of_lerp_and_copy():
    torch.manual_seed(0)
    model = _WithBuffers()
    ema, reference = EMA(model), copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step, beta in enumerate((0.0, 0.5, 0.9, 0.999, 0.3, 1.0)):
        model(torch.randn(8, 6)).square().mean().backward()  # moves the BatchNorm buffers too
        opt.step()
        opt.zero_grad()
        ema.update(model, beta)
        with torch.no_grad():
            for p_ref, p in zip(reference.parameters(), model.parameters(), strict=True):
                p_ref.lerp_(p.detach(), 1 - beta)
            for b_ref, b in zip(reference.buffers(), model.buffers(), strict=True):
                b_ref.copy_(b)
        for (k, a), b in zip(ema.state_dict().items(), reference.state_dict().values(), strict=True):
            assert torch.equal(a, b), (step, k)
    assert ema.model.bn.num_batches_tracked.item() == 6


def test_ema_after_load_state_dict_keeps_updating_the_same_tensors():
    torch.manual_seed(0)
    model = _WithBuffers()
    ema = EMA(model)
    ema.update(model, 0.9)
    state = {k: v.clone() for k, v in ema.state_dict().items()}
    ema.load_state_dict({k: torch.zeros_like(v) for k, v in state.items()})
    ema.update(model, 0.0)  # beta 0: a plain copy of the model
    for (k, a), b in zip(ema.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_ema_refuses_a_different_model():
    ema = EMA(_WithBuffers())
    with pytest.raises(ValueError, match="differ"):
        ema.update(nn.Linear(2, 2), 0.5)
