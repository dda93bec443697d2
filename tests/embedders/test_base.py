import pytest
import torch
from safetensors.torch import load_file, save_file

from vcdm.data.augment import AugmentConfig
from vcdm.embedders.base import Embedder, EmbeddingStats, embed_images, knn_accuracy
from vcdm.errors import VcdmError

IDENTITY = AugmentConfig(
    max_rotation_deg=0.0, max_translate=0.0, scale_range=(1.0, 1.0), contrast=0.0, brightness=0.0
)


class PoolEmbedder:
    """A deterministic stand-in: 2x2 average pooling of the image, flattened."""

    dim = 1 * 2 * 2

    def __init__(self):
        self.calls = []

    def encode_images(self, x):
        self.calls.append((x.shape[0], torch.is_grad_enabled(), float(x.min()), float(x.max())))
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)

    def encode_text(self, texts):
        raise VcdmError("PoolEmbedder has no text encoder")


def _uint8_images(n=10, seed=0):
    return torch.randint(
        0, 256, (n, 1, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def test_protocol_is_satisfied_by_a_duck_typed_embedder():
    assert isinstance(PoolEmbedder(), Embedder)
    assert not isinstance(object(), Embedder)


def test_stats_standardise_and_invert():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(500, 6, generator=g) * torch.tensor([1, 2, 3, 0.1, 5, 1]) + 4
    stats = EmbeddingStats.from_embeddings(emb)
    z = stats.normalize(emb)
    assert torch.allclose(z.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(z.std(0, correction=0), torch.ones(6), atol=1e-4)
    assert torch.allclose(stats.denormalize(z), emb, atol=1e-5)
    assert stats.mean.dtype == stats.std.dtype == torch.float32 and stats.mean.shape == (6,)


def test_stats_of_a_constant_dimension_stay_finite():
    emb = torch.cat([torch.randn(20, 2), torch.full((20, 1), 3.0)], 1)
    stats = EmbeddingStats.from_embeddings(emb, eps=1e-3)
    assert stats.std[2] == pytest.approx(1e-3)
    assert torch.isfinite(stats.normalize(emb)).all()


def test_stats_round_trip_through_safetensors(tmp_path):
    stats = EmbeddingStats.from_embeddings(torch.randn(50, 3))
    save_file(stats.to_dict(), tmp_path / "stats.safetensors")
    loaded = EmbeddingStats.from_dict(load_file(tmp_path / "stats.safetensors"))
    assert torch.equal(loaded.mean, stats.mean) and torch.equal(loaded.std, stats.std)


@pytest.mark.parametrize(
    "d",
    [
        {"mean": torch.zeros(3)},
        {"mean": torch.zeros(3), "std": torch.ones(4)},
        {"mean": torch.zeros(2), "std": torch.zeros(2)},
    ],
)
def test_stats_from_bad_dict_raise(d):
    with pytest.raises(VcdmError, match="embedding stats"):
        EmbeddingStats.from_dict(d)


def test_stats_need_two_rows():
    with pytest.raises(VcdmError, match="N >= 2"):
        EmbeddingStats.from_embeddings(torch.zeros(1, 4))


def test_embed_images_plain_matches_direct_encoding_in_order():
    images = _uint8_images()
    embedder = PoolEmbedder()
    out = embed_images(embedder, images, batch_size=3)
    expected = embedder.encode_images(images.float() / 127.5 - 1)
    assert out.shape == (10, 4) and out.dtype == torch.float32
    assert torch.allclose(out, expected)
    # Batched (3, 3, 3, 1), without grad, on images scaled to [-1, 1].
    assert [c[0] for c in embedder.calls[:4]] == [3, 3, 3, 1]
    assert not any(c[1] for c in embedder.calls[:4])
    assert all(-1 <= c[2] and c[3] <= 1 for c in embedder.calls)


def test_embed_images_copies_follow_the_plain_rows():
    images = _uint8_images()
    gen = torch.Generator().manual_seed(0)
    # Identity augmentations make every copy equal its image: row r embeds image r % N.
    out = embed_images(PoolEmbedder(), images, batch_size=4, copies=2, augment_cfg=IDENTITY, generator=gen)
    assert out.shape == (30, 4)
    assert torch.allclose(out[10:20], out[:10]) and torch.allclose(out[20:], out[:10])


def test_embed_images_augmented_copies_are_new_and_deterministic():
    images = _uint8_images()
    cfg = AugmentConfig(max_rotation_deg=20.0, contrast=0.5, brightness=0.3)

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return embed_images(PoolEmbedder(), images, copies=2, augment_cfg=cfg, generator=gen)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a[10:], c[10:])
    assert torch.equal(a[:10], c[:10])
    assert not torch.allclose(a[10:20], a[:10]) and not torch.allclose(a[10:20], a[20:])


def test_embed_images_errors():
    with pytest.raises(VcdmError, match="uint8"):
        embed_images(PoolEmbedder(), torch.zeros(2, 1, 8, 8))
    with pytest.raises(VcdmError, match="copies"):
        embed_images(PoolEmbedder(), _uint8_images(), copies=-1)
    with pytest.raises(ValueError, match="generator"):
        embed_images(PoolEmbedder(), _uint8_images(), copies=1)


def _clusters(n_per_class, num_classes, spread, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(num_classes) * 10
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), num_classes, generator=g), labels


def test_knn_separated_clusters_are_classified_perfectly():
    train, train_labels = _clusters(30, 4, 0.5, 0)
    test, test_labels = _clusters(10, 4, 0.5, 1)
    assert knn_accuracy(train, train_labels, test, test_labels, k=10) == 1.0


def test_knn_random_labels_give_chance():
    train, _ = _clusters(100, 4, 0.5, 0)
    test, test_labels = _clusters(100, 4, 0.5, 1)
    random_labels = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(2))
    assert 0.1 < knn_accuracy(train, random_labels, test, test_labels, k=10) < 0.4


def test_knn_majority_vote_and_tie_break():
    train = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    labels = torch.tensor([0, 1, 1, 2])
    query = torch.tensor([[0.0]])
    # k=3: neighbours 0 (class 0), 1, 2 (class 1) -> class 1 wins the vote although class 0 is nearest.
    assert knn_accuracy(train, labels, query, torch.tensor([1]), k=3) == 1.0
    # k=2: one vote each -> the nearer neighbour's class wins.
    assert knn_accuracy(train, labels, query, torch.tensor([0]), k=2) == 1.0


def test_knn_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        knn_accuracy(torch.zeros(3, 2), torch.zeros(3), torch.zeros(1, 2), torch.zeros(1), k=4)
