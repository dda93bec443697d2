"""The embedder interface, embedding statistics, dataset embedding and a k-NN probe."""

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from vcdm.data.augment import AugmentConfig, augment
from vcdm.errors import VcdmError


@runtime_checkable
class Embedder(Protocol):
    """Maps images (and optionally text) to semantic vectors y of size `dim`."""

    dim: int

    def encode_images(self, x: Tensor) -> Tensor:
        """Embed images: float32 in [-1, 1] (B, C, H, W) -> float32 (B, dim)."""
        ...

    def encode_text(self, texts: list[str]) -> Tensor:
        """Embed texts -> float32 (B, dim); raises VcdmError when the embedder has no text encoder."""
        ...


@dataclass
class EmbeddingStats:
    """Per-dimension mean and std of a set of embeddings, to standardise them.

    RCG (Li, Katabi, He 2023) and Diffusion Autoencoders (Preechakul et al. 2022) z-normalise each
    embedding dimension before modelling it with a diffusion prior.
    """

    mean: Tensor  # (D,) float32
    std: Tensor  # (D,) float32, > 0

    @classmethod
    def from_embeddings(cls, emb: Tensor, eps: float = 1e-6) -> "EmbeddingStats":
        """Fit the statistics.

        Args:
            emb: embeddings, float (N, D) with N >= 2.
            eps: lower bound on each std, so constant dimensions do not divide by zero.

        Returns:
            The per-dimension mean and (population) std, float32 (D,) on the CPU.
        """
        if emb.ndim != 2 or emb.shape[0] < 2:
            raise VcdmError(f"embeddings: expected shape (N, D) with N >= 2, got {tuple(emb.shape)}")
        emb = emb.detach().double().cpu()
        mean = emb.mean(0)
        std = emb.std(0, correction=0).clamp_min(eps)
        return cls(mean=mean.float(), std=std.float())

    def normalize(self, emb: Tensor) -> Tensor:
        """Standardise: (emb - mean) / std, for emb (..., D); keeps emb's device and dtype."""
        return (emb - self.mean.to(emb)) / self.std.to(emb)

    def denormalize(self, emb: Tensor) -> Tensor:
        """Undo `normalize`: emb * std + mean, for emb (..., D)."""
        return emb * self.std.to(emb) + self.mean.to(emb)

    def to_dict(self) -> dict[str, Tensor]:
        """Tensors to save (e.g. with safetensors): {"mean": (D,), "std": (D,)}."""
        return {"mean": self.mean.contiguous(), "std": self.std.contiguous()}

    @classmethod
    def from_dict(cls, d: dict[str, Tensor]) -> "EmbeddingStats":
        """Rebuild from `to_dict` output; raises VcdmError on missing keys or mismatched shapes."""
        if "mean" not in d or "std" not in d:
            raise VcdmError(f"embedding stats: expected keys 'mean' and 'std', got {sorted(d)}")
        mean, std = d["mean"], d["std"]
        if mean.ndim != 1 or mean.shape != std.shape:
            raise VcdmError(
                f"embedding stats: expected 'mean' and 'std' of the same shape (D,), "
                f"got {tuple(mean.shape)} and {tuple(std.shape)}"
            )
        if not bool((std > 0).all()):
            raise VcdmError("embedding stats: 'std' must be positive in every dimension")
        return cls(mean=mean.float(), std=std.float())


def embed_images(
    embedder: Embedder,
    images_uint8: Tensor,
    *,
    batch_size: int = 256,
    copies: int = 0,
    augment_cfg: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Embed a stored dataset, optionally with augmented copies of every image.

    The VCDM paper (Harvey & Wood 2023) enlarges the prior's training set on small datasets by
    embedding augmented copies of the images.

    Args:
        embedder: any `Embedder`.
        images_uint8: the dataset, uint8 (N, C, H, W).
        batch_size: images per `encode_images` call.
        copies: number of augmented copies of every image to embed after the plain ones.
        augment_cfg: augmentations of the copies (default `AugmentConfig()`).
        generator: CPU generator for the augmentations; required when copies > 0.
        progress: show a tqdm progress bar.

    Returns:
        float32 (N * (1 + copies), dim) on the CPU: rows [0, N) are the plain embeddings in dataset
        order, rows [k * N, (k + 1) * N) the k-th augmented copy of every image, so row r embeds
        image r % N.
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4:
        raise VcdmError(
            f"images: expected uint8 (N, C, H, W), got {images_uint8.dtype} {tuple(images_uint8.shape)}"
        )
    if not isinstance(copies, int) or copies < 0:
        raise VcdmError(f"copies: expected an integer >= 0, got {copies!r}")
    if batch_size < 1:
        raise VcdmError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    if copies > 0 and generator is None:
        raise ValueError("embed_images: copies > 0 needs a generator for the augmentations")
    augment_cfg = augment_cfg or AugmentConfig()

    n = images_uint8.shape[0]
    starts = [(copy, i) for copy in range(1 + copies) for i in range(0, n, batch_size)]
    out = []
    with torch.no_grad():
        for copy, i in tqdm(starts, desc="embedding", disable=not progress):
            x = images_uint8[i : i + batch_size].float() / 127.5 - 1
            if copy > 0:
                x = augment(x, augment_cfg, generator)
            out.append(embedder.encode_images(x).float().cpu())
    if not out:
        return torch.zeros(0, embedder.dim)
    return torch.cat(out)


def knn_accuracy(
    train_emb: Tensor, train_labels: Tensor, test_emb: Tensor, test_labels: Tensor, k: int = 10
) -> float:
    """Classification accuracy of a k-nearest-neighbour vote in embedding space.

    Neighbours are found by Euclidean distance (equal to cosine ranking for L2-normalised
    embeddings); the majority label wins, and a tie goes to the class whose neighbours rank nearer.

    Args:
        train_emb: reference embeddings, float (N, D).
        train_labels: their labels, int64 (N,).
        test_emb: query embeddings, float (M, D).
        test_labels: their labels, int64 (M,).
        k: number of neighbours, 1 <= k <= N.

    Returns:
        The fraction of queries whose vote equals their label, in [0, 1].
    """
    if train_emb.ndim != 2 or test_emb.ndim != 2 or train_emb.shape[1] != test_emb.shape[1]:
        raise ValueError(
            f"knn_accuracy: expected (N, D) and (M, D), got {tuple(train_emb.shape)}, {tuple(test_emb.shape)}"
        )
    if not 1 <= k <= train_emb.shape[0]:
        raise ValueError(f"knn_accuracy: k must be in [1, {train_emb.shape[0]}], got {k}")
    train_emb, test_emb = train_emb.float().cpu(), test_emb.float().cpu()
    train_labels, test_labels = train_labels.long().cpu(), test_labels.long().cpu()
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    # Each neighbour casts one vote plus a bonus < 1/k that decreases with rank: all bonuses sum to < 1,
    # so they only break ties.
    weights = 1 + 0.5 * torch.arange(k, 0, -1, dtype=torch.float32) / k**2  # (k,)
    correct = 0
    for i in range(0, test_emb.shape[0], 1024):
        dist = torch.cdist(test_emb[i : i + 1024], train_emb)  # (m, N)
        idx = dist.topk(k, dim=1, largest=False).indices  # (m, k), nearest first
        votes = (F.one_hot(train_labels[idx], num_classes) * weights[:, None]).sum(1)  # (m, classes)
        correct += int((votes.argmax(1) == test_labels[i : i + 1024]).sum())
    return correct / max(test_emb.shape[0], 1)
