"""The CLIP model and its loss: InfoNCE learns a perfect matching on a toy problem, the temperature stays in its
clamp, duplicated captions share their target, and recall@k counts what it says."""

import math

import pytest
import torch
import torch.nn.functional as F

from vcdm.text import (
    ClipModel,
    ImageTowerConfig,
    TextTowerConfig,
    caption_ids,
    heldout_mask,
    info_nce,
    recall_at_k,
)
from vcdm.text.retrieval import is_heldout_caption


def _tiny_clip(min_temperature=0.1, temperature_init=0.2) -> ClipModel:
    torch.manual_seed(0)
    return ClipModel(ImageTowerConfig(image_size=8, in_channels=3, channels=(8,), width=16),
                     TextTowerConfig(vocab_size=20, context_length=4, width=16, depth=1, heads=2), dim=8,
                     temperature_init=temperature_init, min_temperature=min_temperature)  # fmt: skip


def test_infonce_on_a_toy_problem_learns_a_perfect_matching_and_the_temperature_stays_in_its_clamp():
    g = torch.Generator().manual_seed(0)
    n = 8
    images = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    tokens = torch.stack([torch.tensor([1, 3 + i, 3 + (i * 5) % n, 2]) for i in range(n)])  # distinct texts
    model = _tiny_clip()
    rest = [p for name, p in model.named_parameters() if name != "log_logit_scale"]
    # a fast temperature, to reach its clamp within the test
    opt = torch.optim.Adam([{"params": rest}, {"params": [model.log_logit_scale], "lr": 0.1}], lr=1e-2)
    first = None
    temperatures = []
    for _ in range(150):
        z_image, z_text, scale = model(images, tokens)
        loss = info_nce(z_image, z_text, scale).mean()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
        temperatures.append(1 / float(model.logit_scale().detach()))
    with torch.no_grad():
        sim = model.encode_image(images) @ model.encode_tokens(tokens).T
    assert torch.equal(sim.argmax(1), torch.arange(n)) and torch.equal(sim.argmax(0), torch.arange(n))
    assert float(loss.detach()) < 0.05 * first
    # a matching this easy wants the lowest temperature it may have: it reaches the clamp and stays there
    assert all(0.1 - 1e-6 <= t <= 1 for t in temperatures)
    assert temperatures[-1] == pytest.approx(0.1)


def test_the_logit_scale_is_clamped_to_one_over_the_temperature_bounds():
    model = _tiny_clip(min_temperature=0.01, temperature_init=0.07)
    assert float(model.logit_scale()) == pytest.approx(1 / 0.07)
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert float(model.logit_scale()) == pytest.approx(100.0)
    with torch.no_grad():
        model.log_logit_scale.fill_(-3.0)
    assert float(model.logit_scale()) == pytest.approx(1.0)


def test_infonce_is_the_mean_of_both_cross_entropies_and_shares_the_target_of_equal_captions():
    g = torch.Generator().manual_seed(1)
    zi = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    zt = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    scale = torch.tensor(3.0)
    logits = scale * zi @ zt.T
    expected = (F.cross_entropy(logits, torch.arange(5), reduction="none")
                + F.cross_entropy(logits.T, torch.arange(5), reduction="none")) / 2  # fmt: skip
    torch.testing.assert_close(info_nce(zi, zt, scale), expected)
    torch.testing.assert_close(info_nce(zi, zt, scale, torch.arange(5)), expected)
    # pairs 0 and 1 share a caption: each of their rows aims at both matches, half and half
    ids = torch.tensor([0, 0, 1, 2, 3])
    row, col = logits.log_softmax(1), logits.T.log_softmax(1)
    by_hand = -(row[0, 0] + row[0, 1] + col[0, 0] + col[0, 1]) / 4
    shared = info_nce(zi, zt, scale, ids)
    torch.testing.assert_close(shared[0], by_hand)
    torch.testing.assert_close(shared[2:], expected[2:])


def test_recall_at_k_counts_the_true_caption_among_the_k_nearest():
    texts = torch.eye(4)  # 4 captions
    ids = torch.tensor([0, 0, 1, 2, 3])
    images = texts[torch.tensor([0, 0, 1, 3, 2])]  # images 3 and 4 look like each other's caption
    r = recall_at_k(images, texts, ids, ks=(1, 2))
    assert r["image_to_text@1"] == pytest.approx(3 / 5) and r["text_to_image@1"] == pytest.approx(2 / 4)
    assert r["image_to_text@2"] == 1.0


def test_heldout_captions_are_a_fixed_tenth_chosen_by_the_caption_alone():
    names = [f"emoji number {i}" for i in range(4000)]
    held = heldout_mask(names, 0.1)
    assert abs(float(held.float().mean()) - 0.1) < 0.015
    assert held.tolist() == [is_heldout_caption(c, 0.1) for c in names]  # no dependence on order or company
    # every image of a held-out caption is held out with it
    captions = [names[i % 50] for i in range(200)]
    mask = heldout_mask(captions, 0.1)
    for c, m in zip(captions, mask.tolist()):
        assert m == is_heldout_caption(c, 0.1)
    assert not heldout_mask(captions, 0.0).any()
    ids, distinct = caption_ids(["b", "a", "b"])
    assert ids.tolist() == [0, 1, 0] and distinct == ["b", "a"]
    assert math.isclose(len(distinct), 2)
