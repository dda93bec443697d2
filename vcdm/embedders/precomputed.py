"""Embeddings computed elsewhere, loaded from an .npy file whose rows align with the dataset."""

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vcdm.errors import VcdmError


class PrecomputedEmbedder:
    """Serves a fixed (N, dim) array of embeddings, row i belonging to dataset image i.

    It cannot embed new images or text: both encoders raise VcdmError.
    """

    def __init__(self, embeddings: Tensor) -> None:
        self.embeddings = embeddings  # (N, dim) float32
        self.dim = int(embeddings.shape[1])

    @classmethod
    def from_npy(cls, path: str | Path, num_images: int | None = None) -> "PrecomputedEmbedder":
        """Load and validate an .npy of embeddings.

        Args:
            path: a NumPy .npy file holding a 2-D floating-point array (N, dim), finite everywhere.
            num_images: the dataset size N that the rows must match; None skips that check.

        Returns:
            The embedder, with `embeddings` float32 (N, dim) on the CPU.
        """
        path = Path(path)
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise VcdmError(f"{path}: cannot read embeddings, expected a NumPy .npy file ({e})") from e
        if not isinstance(array, np.ndarray):  # an .npz archive
            array.close()
            raise VcdmError(f"{path}: expected a .npy file holding one 2-D array (N, dim), got an archive")
        if array.ndim != 2:
            raise VcdmError(f"{path}: expected a 2-D array of embeddings (N, dim), got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise VcdmError(f"{path}: expected floating-point embeddings, got dtype {array.dtype}")
        if not np.isfinite(array).all():
            raise VcdmError(f"{path}: embeddings contain NaN or infinite values")
        if num_images is not None and array.shape[0] != num_images:
            raise VcdmError(
                f"{path}: expected one embedding per image ({num_images} rows), got {array.shape[0]} rows"
            )
        return cls(torch.from_numpy(array.astype(np.float32)))

    def encode_images(self, x: Tensor) -> Tensor:
        """Not available: raises VcdmError (precomputed embeddings cannot embed new images)."""
        raise VcdmError(
            "the precomputed embedder cannot embed new images; use its `embeddings` (row i = image i)"
        )

    def encode_text(self, texts: list[str]) -> Tensor:
        """Not available: raises VcdmError."""
        raise VcdmError("the precomputed embedder has no text encoder")
