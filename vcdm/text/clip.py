"""A CLIP (Radford et al. 2021) trained on (image, caption) pairs: two towers, linear projections to a shared
space, and the symmetric InfoNCE loss with a learned temperature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcdm.data.augment import AugmentConfig, augment
from vcdm.text.config import ImageTowerConfig, TextTowerConfig
from vcdm.text.towers import ImageTower, build_text_tower


class ClipModel(nn.Module):
    """Image tower + text tower, each with a bias-free linear projection to `dim`, L2-normalised; and the
    learned temperature, stored as log(1 / temperature) and clamped to [min_temperature, 1] where it is used.

    open_clip clamps the logit scale to [0, ln 100] in place after each optimiser step; the shared training
    loop owns the step here, so the clamp sits in `logit_scale` (beyond it the scale gets no gradient).
    """

    def __init__(
        self,
        image: ImageTowerConfig,
        text: TextTowerConfig,
        dim: int,
        temperature_init: float,
        min_temperature: float,
    ) -> None:
        super().__init__()
        self.image = ImageTower(image)
        self.text = build_text_tower(text)
        self.image_proj = nn.Linear(self.image.width, dim, bias=False)
        self.text_proj = nn.Linear(self.text.width, dim, bias=False)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature_init)))
        self.max_log_logit_scale = -math.log(min_temperature)
        self.dim = dim

    def logit_scale(self) -> Tensor:
        """1 / temperature, clamped to [1, 1 / min_temperature]; a scalar tensor with gradient inside."""
        return self.log_logit_scale.clamp(0.0, self.max_log_logit_scale).exp()

    def encode_image(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) float in [-1, 1] at the tower's size -> L2-normalised (B, dim)."""
        return F.normalize(self.image_proj(self.image(x)), dim=-1)

    def encode_tokens(self, ids: Tensor) -> Tensor:
        """Token ids (B, L) int64 (padded with 0) -> L2-normalised (B, dim)."""
        return self.project_text(self.text(ids))

    def project_text(self, features: Tensor) -> Tensor:
        """Text-tower features (B, text width) -> L2-normalised (B, dim): the trainable part of a frozen tower."""
        return F.normalize(self.text_proj(features), dim=-1)

    def forward(
        self, image: Tensor, tokens: Tensor | None = None, text_features: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(image embeddings (B, dim), text embeddings (B, dim), logit scale) of a batch of pairs; the text
        comes as token ids, or as the features of a frozen text tower computed once beforehand."""
        z_text = self.encode_tokens(tokens) if text_features is None else self.project_text(text_features)
        return self.encode_image(image), z_text, self.logit_scale()


def info_nce(
    z_image: Tensor, z_text: Tensor, logit_scale: Tensor, caption_ids: Tensor | None = None
) -> Tensor:
    """The symmetric InfoNCE loss of CLIP, per pair.

    Radford et al. 2021, Fig. 3: cross-entropy of the scaled cosine similarities, image -> text over the rows
    and text -> image over the columns, averaged. Where `caption_ids` says that two pairs of the batch share
    their caption (the same emoji name from two vendors), each row's target is spread evenly over all its
    matches instead of the diagonal alone, so that identical texts are not pushed apart.

    Args:
        z_image, z_text: L2-normalised (B, D); row i of both is pair i.
        logit_scale: scalar, 1 / temperature.
        caption_ids: (B,) int64, equal for pairs with equal captions; None: all captions distinct.
    Returns:
        (B,) float32: each pair's loss, the mean of its two directions.
    """
    logits = logit_scale * z_image @ z_text.T  # (B, B): images x texts
    b = logits.shape[0]
    if caption_ids is None:
        target = torch.eye(b, device=logits.device, dtype=logits.dtype)
    else:
        match = (caption_ids[:, None] == caption_ids[None, :]).to(logits.dtype)
        target = match / match.sum(1, keepdim=True)  # symmetric match, so the same for both directions
    loss_i2t = -(target * logits.log_softmax(1)).sum(1)
    loss_t2i = -(target * logits.T.log_softmax(1)).sum(1)
    return (loss_i2t + loss_t2i) / 2


@dataclass
class ClipTask:
    """The training task of the `clip` kind: InfoNCE over a batch of (image, caption) pairs.

    The batch holds "image" (B, C, H, W) in [-1, 1], "caption_id" (B,), and either "tokens" (B, L) or, for a
    fully frozen text tower, its precomputed "text_features" (B, W).
    """

    augment: AugmentConfig | None = None  # random views of the training images; None = off

    def loss(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        x = batch["image"]
        if self.augment is not None:
            x = augment(x, self.augment, generator)
        z_image, z_text, scale = model(x, batch.get("tokens"), batch.get("text_features"))
        return info_nce(z_image, z_text, scale, batch.get("caption_id"))
