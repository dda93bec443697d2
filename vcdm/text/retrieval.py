"""Which captions a CLIP never sees in training, and how well it retrieves across the two modalities.

`heldout_mask` picks a fixed share of the distinct captions by a hash of the caption alone, so every image of
a held-out caption (both vendors' emoji of one name) is held out together, on every machine. `recall_at_k`
scores image -> text and text -> image retrieval with recall@k.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

from vcdm.errors import VcdmError

_SALT = b"vcdm.clip.heldout\0"  # independent of the emoji dataset's own name split (an unsalted hash)


def is_heldout_caption(caption: str, fraction: float) -> bool:
    """Whether `caption` is among the held-out ~`fraction` of captions (SHA-256 of the salted text)."""
    digest = hashlib.sha256(_SALT + caption.encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def heldout_mask(captions: Sequence[str], fraction: float) -> Tensor:
    """(N,) bool, True where an image's caption is held out of training (`is_heldout_caption`)."""
    if not 0 <= fraction < 1:
        raise VcdmError(f"clip.heldout_fraction must be in [0, 1), got {fraction!r}")
    held = {c for c in set(captions) if is_heldout_caption(c, fraction)}
    return torch.tensor([c in held for c in captions], dtype=torch.bool)


def caption_ids(captions: Sequence[str]) -> tuple[Tensor, list[str]]:
    """(ids (N,) int64, the distinct captions in order of first appearance): captions[i] == texts[ids[i]]."""
    index: dict[str, int] = {}
    ids = [index.setdefault(c, len(index)) for c in captions]
    return torch.tensor(ids, dtype=torch.int64), list(index)


def recall_at_k(
    image_emb: Tensor, text_emb: Tensor, ids: Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Retrieval recall@k in both directions.

    Image -> text: an image counts at k when its own caption is among the k texts most similar to it.
    Text -> image: a text counts at k when any image of that caption is among the k most similar images.

    Args:
        image_emb: (N, D) L2-normalised image embeddings.
        text_emb: (M, D) L2-normalised embeddings of the M distinct captions.
        ids: (N,) int64 in [0, M): the caption of each image.
        ks: the cut-offs.
    Returns:
        {"image_to_text@k": share of images, "text_to_image@k": share of texts} for each k.
    """
    if image_emb.ndim != 2 or text_emb.ndim != 2 or len(ids) != len(image_emb):
        raise VcdmError(f"recall_at_k: expected (N, D), (M, D) and (N,), got {tuple(image_emb.shape)}, "
                        f"{tuple(text_emb.shape)}, {tuple(ids.shape)}")  # fmt: skip
    sim = image_emb.float() @ text_emb.float().T  # (N, M)
    # rank of the true caption among the texts: the number of texts strictly more similar to the image
    true = sim.gather(1, ids[:, None])
    rank_i2t = (sim > true).sum(1)  # (N,)
    # rank of a text's best image among the images
    rank_t2i = torch.full((len(text_emb),), len(image_emb), dtype=torch.int64)
    sim_t = sim.T  # (M, N)
    for m in range(len(text_emb)):
        own = ids == m
        if own.any():
            best = sim_t[m, own].max()
            rank_t2i[m] = (sim_t[m, ~own] > best).sum()
    has_image = torch.bincount(ids, minlength=len(text_emb)) > 0
    out = {}
    for k in ks:
        out[f"image_to_text@{k}"] = float((rank_i2t < k).float().mean())
        out[f"text_to_image@{k}"] = float((rank_t2i[has_image] < k).float().mean())
    return out
