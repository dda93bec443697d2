"""The transformer prior p_phi(y | a) over embeddings (docs/architecture.md, "The two-stage model"; Harvey & Wood 2023).

A small pre-norm transformer encoder over four tokens: [condition (class, or a learned null)],
[noise level], [the noisy embedding], [a learned query]; learned position embeddings; the output is
read at the query token. It predicts the clean embedding (x0-prediction); the preconditioning wraps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vcdm.errors import VcdmError
from vcdm.networks.layers import (
    NOISE_EMBEDDINGS,
    ConditionProjector,
    NoiseEmbedding,
    SelfAttention,
    check_choice,
    check_dropout,
    check_int,
)

NUM_TOKENS = 4  # condition, noise level, input embedding, query


@dataclass(frozen=True)
class PriorConfig:
    """Architecture of the prior; `PriorTransformer(cfg)` rebuilds it. JSON-serialisable with asdict."""

    emb_dim: int = 32  # dimension of the embedding y
    width: int = 256  # token width
    depth: int = 4  # number of transformer blocks
    heads: int = 4  # attention heads (width must be divisible by it)
    mlp_ratio: float = 4.0  # hidden width of each block's MLP, as a multiple of width
    num_classes: int = 0  # number of classes of cond["label"]; 0 = unconditional (the null token always)
    dropout: float = 0.0  # dropout on attention probabilities and MLP activations, in [0, 1)
    noise_embedding: str = "fourier"  # "fourier" (EDM NCSN++) or "positional" (sinusoidal, DDPM)

    def __post_init__(self) -> None:
        owner = "PriorConfig"
        check_int(owner, "emb_dim", self.emb_dim, 1)
        check_int(owner, "width", self.width, 1)
        check_int(owner, "depth", self.depth, 1)
        check_int(owner, "heads", self.heads, 1)
        if self.width % self.heads:
            raise VcdmError(f"{owner}.heads: width={self.width} is not divisible by heads={self.heads}")
        ratio = self.mlp_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or ratio <= 0:
            raise VcdmError(f"{owner}.mlp_ratio: expected a number > 0, got {ratio!r}")
        check_int(owner, "num_classes", self.num_classes, 0)
        check_dropout(owner, self.dropout)
        check_choice(owner, "noise_embedding", self.noise_embedding, NOISE_EMBEDDINGS)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) (GPT-2 / ViT layout)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = max(1, round(width * mlp_ratio))
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width)
        )

    def forward(self, x: Tensor) -> Tensor:
        """x (B, N, width) -> (B, N, width)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PriorTransformer(nn.Module):
    """The prior network F(y, c_noise, cond) -> (B, emb_dim), an estimate of the clean embedding.

    Args:
        cfg: the architecture.
    """

    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width = cfg.width
        self.condition = ConditionProjector(0, cfg.num_classes, width)
        self.noise_embedding = NoiseEmbedding(cfg.noise_embedding, width, width)
        self.input_proj = nn.Linear(cfg.emb_dim, width)
        self.query = nn.Parameter(torch.randn(width) * 0.02)
        self.pos = nn.Parameter(torch.randn(NUM_TOKENS, width) * 0.02)
        self.blocks = nn.ModuleList(
            [TransformerBlock(width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth)]
        )
        self.norm_out = nn.LayerNorm(width)
        self.out = nn.Linear(width, cfg.emb_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, y: Tensor, c_noise: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        """Evaluate the network.

        Args:
            y: (B, emb_dim) float, the (preconditioned) noisy embedding.
            c_noise: (B,) float noise level (EDM's ln(sigma) / 4, or a DDPM timestep).
            cond: optional dict with "label" (B,) int64 and "null" (B,) bool (True = learned null condition
                for that sample); other keys are ignored. None or no "label" = unconditional.

        Returns:
            (B, emb_dim) float32, also under autocast.
        """
        if y.ndim != 2 or y.shape[1] != self.cfg.emb_dim:
            raise VcdmError(f"y: expected shape (B, {self.cfg.emb_dim}), got {tuple(y.shape)}")
        batch = y.shape[0]
        tokens = [
            self.condition(cond, batch),
            self.noise_embedding(c_noise),
            self.input_proj(y.float()),
            self.query[None, :].expand(batch, -1),
        ]
        # The residual stream stays float32; under autocast the matmuls inside the blocks run in bf16.
        h = torch.stack([t.float() for t in tokens], dim=1) + self.pos  # (B, 4, width)
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm_out(h[:, -1])).float()
