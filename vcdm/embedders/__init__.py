"""Embedders map images (and optionally text) to the semantic vectors y of the two-stage model."""

from vcdm.embedders.base import Embedder, EmbeddingStats, embed_images, knn_accuracy
from vcdm.embedders.clip import ClipEmbedder
from vcdm.embedders.learned import ContrastiveTask, ConvEncoder, EncoderConfig, LearnedEmbedder
from vcdm.embedders.precomputed import PrecomputedEmbedder

__all__ = [
    "ClipEmbedder",
    "ContrastiveTask",
    "ConvEncoder",
    "Embedder",
    "EmbeddingStats",
    "EncoderConfig",
    "LearnedEmbedder",
    "PrecomputedEmbedder",
    "embed_images",
    "knn_accuracy",
]
