"""Embedders: images (and text) -> semantic vectors y. (Temporary stub by the lead; the embedders helper replaces it.)"""

from vcdm.embedders.base import Embedder, EmbeddingStats, embed_images, knn_accuracy
from vcdm.embedders.learned import ContrastiveTask, ConvEncoder, EncoderConfig, LearnedEmbedder

__all__ = ["ContrastiveTask", "ConvEncoder", "Embedder", "EmbeddingStats", "EncoderConfig", "LearnedEmbedder",
           "embed_images", "knn_accuracy"]
