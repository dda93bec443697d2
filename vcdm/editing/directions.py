"""Embedding edits: move y along a semantic direction while keeping x_T, and ways to find directions.

Every direction lives in the normalised embedding space of the run (embed, then standardise with the run's
statistics), the space y_norm and the decoder's condition live in. A direction "from a to b" is
mean(y_b) - mean(y_a): strength 1 moves an embedding by the whole difference of the two means.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vcdm.data import ImageData
from vcdm.editing.latent import check_two_stage, embed, reconstruct
from vcdm.errors import VcdmError
from vcdm.pipeline import Pipeline


@torch.no_grad()
def edit_embedding(
    pipe: Pipeline,
    y_norm: Tensor,
    x_T: Tensor,
    direction: Tensor,
    strengths: Sequence[float] | Tensor,
    *,
    num_steps: int,
    guidance: float = 1.0,
) -> Tensor:
    """Decode (y + s * direction, x_T) for every strength s, keeping each image's noise x_T.

    Args:
        y_norm: normalised embeddings (B, D). x_T: their noise (B, C, H, W) (from `invert`).
        direction: (D,) for every image, or (B, D).
        strengths: S multipliers of the direction; 0 reconstructs the image.
    Returns:
        float32 in [-1, 1] (B, S, C, H, W): row b holds image b's edits in the order of `strengths`.
    """
    check_two_stage(pipe)
    s = torch.as_tensor(strengths, dtype=torch.float32, device=pipe.device).reshape(-1)  # (S,)
    if len(s) == 0:
        raise VcdmError("edit_embedding: give at least one strength")
    b, d = y_norm.shape
    if direction.numel() not in (d, b * d):
        raise VcdmError(
            f"edit_embedding: direction must be ({d},) or ({b}, {d}), got {tuple(direction.shape)}"
        )
    direction = direction.to(pipe.device, torch.float32).reshape(-1, d).expand(b, d)
    ys = y_norm.to(pipe.device)[:, None] + s[None, :, None] * direction[:, None]  # (B, S, D)
    x_Ts = x_T.to(pipe.device).repeat_interleave(len(s), dim=0)  # (B * S, C, H, W)
    out = reconstruct(pipe, ys.reshape(-1, d), x_Ts, num_steps=num_steps, guidance=guidance)
    return out.reshape(b, len(s), *out.shape[1:])


@torch.no_grad()
def direction_from_images(pipe: Pipeline, a_images: Tensor, b_images: Tensor) -> Tensor:
    """The direction from set a to set b: mean normalised embedding of b minus that of a.

    Args:
        a_images, b_images: float32 in [-1, 1] (N_a, C, H, W) and (N_b, C, H, W), N >= 1.
    Returns:
        float32 (D,).
    """
    if len(a_images) == 0 or len(b_images) == 0:
        raise VcdmError("direction_from_images: both image sets must hold at least one image")
    return embed(pipe, b_images).mean(0) - embed(pipe, a_images).mean(0)


@torch.no_grad()
def direction_from_class_means(
    pipe: Pipeline, data: ImageData, label_a: int, label_b: int, *, limit: int = 500
) -> Tensor:
    """The direction from class label_a to class label_b of a labelled dataset (class-mean difference).

    Args:
        data: labelled images (e.g. the run's training set, `vcdm.data.load_dataset(cfg.data)`).
        label_a, label_b: class indices in [0, data.num_classes).
        limit: at most this many images of each class are embedded (the first ones).
    Returns:
        float32 (D,).
    """
    if data.labels is None:
        raise VcdmError(f"{data.source}: has no class labels, so there are no class means")
    sets = []
    for label in (label_a, label_b):
        if not 0 <= int(label) < data.num_classes:
            raise VcdmError(
                f"class label {label}: expected an index in [0, {data.num_classes}) for {data.source}"
            )
        index = torch.nonzero(data.labels == int(label)).flatten()[:limit]
        if len(index) == 0:
            raise VcdmError(f"{data.source}: no images of class {label}")
        sets.append(data.as_float(index))
    return direction_from_images(pipe, sets[0], sets[1])


@torch.no_grad()
def direction_from_texts(pipe: Pipeline, text_a: str, text_b: str) -> Tensor:
    """The direction from text_a to text_b: normalised text embedding of b minus that of a.

    Needs an embedder with a text encoder (CLIP); the learned embedder raises VcdmError.
    Returns:
        float32 (D,).
    """
    embedder = getattr(pipe, "embedder", None)
    if embedder is None:
        raise VcdmError("this pipeline has no embedder; load it with vcdm.editing.load_pipeline(run_dir)")
    emb = pipe.stats.normalize(embedder.encode_text([text_a, text_b]).float().to(pipe.device))  # (2, D)
    return emb[1] - emb[0]
