"""The transformer prior p_phi(y | a) over embeddings (docs/architecture.md, "The two-stage model"; Harvey & Wood 2023).

A small pre-norm transformer encoder over four tokens: [condition (class, or a learned null)],
[noise level], [the noisy embedding], [a learned query]; learned position embeddings; the output is
read at the query token. It predicts the clean embedding (x0-prediction); the preconditioning wraps it.

Text-conditioned (text_width > 0, DALL-E 2's prior, Ramesh et al. 2022, Sec. 2.2): the caption's token
encodings (projected to the width) and its pooled text embedding come first, as text_length + 1 more tokens,
padding masked out of attention; a dropped caption (cond["null"]) is a learned null sequence. The padded
positions no row attends to are trimmed away before the blocks (forward; rows run in groups of similar caption
length), so a short caption runs on a few tokens rather than text_length + 5; outputs are unchanged up to float
rounding.
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
    # the caption (vcdm.stages.text): tokens of cond["text_tokens"], their width, cond["text_emb"]'s width;
    # all 0 = no text (set from the run's CLIP when prior.condition is "text")
    text_length: int = 0
    text_width: int = 0
    text_dim: int = 0

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
        text = (self.text_length, self.text_width, self.text_dim)
        for name, value in zip(("text_length", "text_width", "text_dim"), text):
            check_int(owner, name, value, 0)
        if any(text) and not all(text):
            raise VcdmError(f"{owner}.text_length: text_length, text_width and text_dim must all be 0 (no "
                            f"text) or all positive, got {text}")  # fmt: skip

    @property
    def uses_text(self) -> bool:
        return self.text_width > 0


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

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, N, width) -> (B, N, width); mask (B, N) bool: the tokens attended to (None: all)."""
        x = x + self.attn(self.norm1(x), mask)
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
        if cfg.uses_text:  # created last: a prior without text initialises exactly as before
            self.text_proj = nn.Linear(cfg.text_width, width)
            self.text_emb_proj = nn.Linear(cfg.text_dim, width)
            self.text_pos = nn.Parameter(torch.randn(cfg.text_length + 1, width) * 0.02)
            self.text_null = nn.Parameter(torch.randn(cfg.text_length + 1, width) * 0.02)

    def _text_tokens(self, cond: dict[str, Tensor] | None, batch: int, device) -> tuple[Tensor, Tensor]:
        """The caption's tokens (B, text_length + 1, width) and their attention mask (B, text_length + 1)."""
        n = self.cfg.text_length + 1
        null = self.text_null[None].expand(batch, -1, -1)
        everything = torch.ones(batch, n, dtype=torch.bool, device=device)
        if cond is None or "text_tokens" not in cond:
            return null, everything
        tokens, mask, emb = cond["text_tokens"], cond["text_mask"], cond["text_emb"]
        want = (batch, self.cfg.text_length, self.cfg.text_width)
        if tuple(tokens.shape) != want or tuple(emb.shape) != (batch, self.cfg.text_dim):
            raise VcdmError(f"cond['text_tokens'] / ['text_emb']: expected {want} / ({batch}, "
                            f"{self.cfg.text_dim}), got {tuple(tokens.shape)} / {tuple(emb.shape)}")  # fmt: skip
        drop = cond.get("null", torch.zeros(batch, dtype=torch.bool, device=device)).to(device, torch.bool)
        # a dropped caption's tokens are never read (zeroed), so placeholders are harmless
        keep = ~drop[:, None, None]
        text = torch.cat([self.text_proj(torch.where(keep, tokens.float(), 0.0)),
                          self.text_emb_proj(torch.where(keep[:, 0], emb.float(), 0.0))[:, None]], 1)  # fmt: skip
        text = torch.where(keep, text, null)
        mask = torch.cat([mask.to(device, torch.bool), everything[:, :1]], 1)
        return text, torch.where(keep[:, :, 0], mask, everything)

    def forward(self, y: Tensor, c_noise: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        """Evaluate the network.

        Args:
            y: (B, emb_dim) float, the (preconditioned) noisy embedding.
            c_noise: (B,) float noise level (EDM's ln(sigma) / 4, or a DDPM timestep).
            cond: optional dict with "label" (B,) int64 and "null" (B,) bool (True = learned null condition
                for that sample); with text, "text_tokens", "text_mask", "text_emb" (vcdm.stages.text); other
                keys are ignored. None or no "label" (no "text_tokens") = unconditional.

        Returns:
            (B, emb_dim) float32, also under autocast.
        """
        h, mask = self.tokens(y, c_noise, cond)
        if mask is None:
            return self.read(h, None)
        # Trimming: a position no row attends to changes no output (it is masked out of every attention), so
        # rows run in groups of similar attended length (up to a power of two: short captions, long ones, and
        # the rows that attend everywhere, such as a dropped caption's learned null sequence), each group on the
        # positions some of its rows attend to. Each row depends only on itself, up to float rounding.
        group = torch.log2(mask.sum(1).float()).ceil()
        out, groups = h.new_empty(len(h), self.cfg.emb_dim), group.unique()
        for g in groups:
            rows = group == g
            h_rows, mask_rows = (h, mask) if len(groups) == 1 else (h[rows], mask[rows])
            used = mask_rows.any(0)
            read = self.read(h_rows[:, used], mask_rows[:, used])
            if len(groups) == 1:
                return read
            out[rows] = read
        return out

    def tokens(
        self, y: Tensor, c_noise: Tensor, cond: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """The input tokens (B, N, width) float32 of `forward` and their attention mask (B, N) bool (None without
        text: every token), untrimmed: N = 4, or text_length + 5 with text."""
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
        if not self.cfg.uses_text:
            return h, None
        text, text_mask = self._text_tokens(cond, batch, y.device)
        h = torch.cat([text.float() + self.text_pos, h], 1)  # (B, text_length + 5, width)
        mask = torch.cat([text_mask, torch.ones(batch, NUM_TOKENS, dtype=torch.bool, device=y.device)], 1)
        return h, mask

    def read(self, h: Tensor, mask: Tensor | None) -> Tensor:
        """The blocks over tokens h (B, N, width) with attention mask (B, N) (None: all); the output read at the
        query token (the last) -> (B, emb_dim) float32."""
        for block in self.blocks:
            h = block(h, mask)
        return self.out(self.norm_out(h[:, -1])).float()
