"""Building blocks shared by the U-Net decoder and the transformer prior.

One implementation each of: the noise-level features (random Fourier or sinusoidal), the noise-embedding
MLP, the condition projector with its learned null (classifier-free guidance), self-attention, and the
group-norm helper. Config validation helpers live here too so that both configs word errors alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcdm.errors import VcdmError

NOISE_EMBEDDINGS = ("fourier", "positional")

# ---------------------------------------------------------------------------------------------------------
# Config validation


def check_int(owner: str, field: str, value: object, minimum: int) -> None:
    """Raise VcdmError unless `value` is an int (not a bool) >= `minimum`; the message names owner.field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise VcdmError(f"{owner}.{field}: expected an integer >= {minimum}, got {value!r}")


def check_choice(owner: str, field: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise VcdmError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise VcdmError(f"{owner}.{field}: expected one of {', '.join(allowed)}, got {value!r}")


def check_dropout(owner: str, value: object) -> None:
    """Raise VcdmError unless `value` is a probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise VcdmError(f"{owner}.dropout: expected a number in [0, 1), got {value!r}")


# ---------------------------------------------------------------------------------------------------------
# Noise-level embedding


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar noise level (NCSN++; Song et al. 2021, as used in EDM).

    The frequencies are drawn once from a fixed seed (no global RNG use) and stored as a buffer, so they
    travel with the state dict. Suited to c_noise = ln(sigma) / 4 (order 1); not to DDPM timesteps in
    [0, 1000], for which use PositionalEmbedding.

    Args:
        num_channels: even number of output features.
        scale: standard deviation of the frequencies (EDM uses 16).
        seed: the seed of the frequencies (a second embedding in the same network takes another one).
    """

    def __init__(self, num_channels: int, scale: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(num_channels // 2, generator=generator) * scale)

    def forward(self, c_noise: Tensor) -> Tensor:
        """Map c_noise (B,) to float32 features (B, num_channels)."""
        # Tancik et al. 2020: [cos(2 pi f x), sin(2 pi f x)].
        x = c_noise.float()[:, None] * (2 * math.pi * self.freqs.float())[None, :]
        return torch.cat([x.cos(), x.sin()], dim=1)


class PositionalEmbedding(nn.Module):
    """Sinusoidal features of a scalar (Vaswani et al. 2017, Sec. 3.5; DDPM's timestep embedding).

    Frequencies (1 / max_positions) ** (i / half) for i = 0..half-1, so it resolves both DDPM timesteps
    (0..999) and EDM's c_noise = ln(sigma) / 4.

    Args:
        num_channels: even number of output features.
        max_positions: the longest period.
    """

    def __init__(self, num_channels: int, max_positions: int = 10000) -> None:
        super().__init__()
        half = num_channels // 2
        freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c_noise: Tensor) -> Tensor:
        """Map c_noise (B,) to float32 features (B, num_channels)."""
        x = c_noise.float()[:, None] * self.freqs[None, :]
        return torch.cat([x.cos(), x.sin()], dim=1)


class NoiseEmbedding(nn.Module):
    """Noise-level features followed by a two-layer MLP: c_noise (B,) -> (B, out_dim).

    Args:
        kind: "fourier" (FourierFeatures) or "positional" (PositionalEmbedding).
        num_features: number of (even) features fed to the MLP.
        out_dim: output width (also the hidden width).
        seed: the seed of the Fourier frequencies (fourier only).
    """

    def __init__(self, kind: str, num_features: int, out_dim: int, seed: int = 0) -> None:
        super().__init__()
        check_choice("NoiseEmbedding", "kind", kind, NOISE_EMBEDDINGS)
        num_features += num_features % 2
        self.features = (
            FourierFeatures(num_features, seed=seed)
            if kind == "fourier"
            else PositionalEmbedding(num_features)
        )
        self.mlp = nn.Sequential(nn.Linear(num_features, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, c_noise: Tensor) -> Tensor:
        """Map c_noise (B,) float to (B, out_dim)."""
        if c_noise.ndim != 1:
            raise VcdmError(f"c_noise: expected shape (B,), got {tuple(c_noise.shape)}")
        return self.mlp(self.features(c_noise))


# ---------------------------------------------------------------------------------------------------------
# Conditioning with a learned null (Ho & Salimans 2022, classifier-free guidance)


class ConditionProjector(nn.Module):
    """Linear projection of [emb ++ one_hot(label) ++ text_emb] with a learned null vector for dropped conditions.

    Reads cond["emb"] (B, emb_dim), cond["label"] (B,) int64 and cond["null"] (B,) bool. A sample uses the
    learned null vector instead of the projection when cond["null"] is True for it, when cond is None, or
    when none of the keys the projector needs is present (all of them, or none, must be present). The
    emb and label of a dropped sample are never read, so placeholders such as label -1 are allowed. With emb_dim = num_classes = 0 it always returns
    the null vector (the prior's condition token when it is unconditional).

    Args:
        emb_dim: dimension of cond["emb"]; 0 = not read.
        num_classes: number of classes of cond["label"]; 0 = not read.
        out_dim: width of the projection.
        text_dim: dimension of cond["text_emb"] (a caption's pooled CLIP text embedding); 0 = not read.
    """

    def __init__(self, emb_dim: int, num_classes: int, out_dim: int, text_dim: int = 0) -> None:
        super().__init__()
        self.emb_dim = emb_dim
        self.num_classes = num_classes
        self.text_dim = text_dim
        in_dim = emb_dim + num_classes + text_dim
        self.proj = nn.Linear(in_dim, out_dim) if in_dim > 0 else None
        self.null = nn.Parameter(torch.zeros(out_dim))

    def forward(self, cond: dict[str, Tensor] | None, batch_size: int) -> Tensor:
        """Return the condition vectors (B, out_dim) for a batch of `batch_size` samples."""
        null = self.null[None, :].expand(batch_size, -1)
        sizes = (("emb", self.emb_dim), ("label", self.num_classes), ("text_emb", self.text_dim))
        wanted = [key for key, size in sizes if size > 0]
        present = [key for key in wanted if cond is not None and key in cond]
        if self.proj is None or not present:
            return null
        if len(present) != len(wanted):
            missing = next(key for key in wanted if key not in present)
            raise VcdmError(
                f"cond: missing {missing!r} while {present[0]!r} is given; this network reads "
                f"{' and '.join(wanted)} (pass all of them, or none for the unconditional branch)"
            )
        drop = torch.zeros(batch_size, 1, dtype=torch.bool, device=self.null.device)
        if "null" in cond:
            drop = cond["null"].to(device=self.null.device, dtype=torch.bool).reshape(batch_size, 1)
        # Dropped samples' inputs are unused: zero them so placeholders (label -1, NaN emb) are harmless.
        parts = []
        if self.emb_dim > 0:
            emb = cond["emb"]
            if emb.shape != (batch_size, self.emb_dim):
                raise VcdmError(
                    f"cond['emb']: expected shape ({batch_size}, {self.emb_dim}), got {tuple(emb.shape)}"
                )
            parts.append(torch.where(drop, 0.0, emb.float()))
        if self.num_classes > 0:
            label = cond["label"]
            if label.shape != (batch_size,) or label.dtype != torch.int64:
                raise VcdmError(
                    f"cond['label']: expected int64 of shape ({batch_size},), got {label.dtype} "
                    f"{tuple(label.shape)}"
                )
            label = torch.where(drop[:, 0], 0, label)
            if batch_size > 0 and (int(label.min()) < 0 or int(label.max()) >= self.num_classes):
                raise VcdmError(
                    f"cond['label']: expected class indices in [0, {self.num_classes}), "
                    f"got values in [{int(label.min())}, {int(label.max())}]"
                )
            parts.append(F.one_hot(label, self.num_classes).float())
        if self.text_dim > 0:
            text = cond["text_emb"]
            if text.shape != (batch_size, self.text_dim):
                raise VcdmError(f"cond['text_emb']: expected shape ({batch_size}, {self.text_dim}), got "
                                f"{tuple(text.shape)}")  # fmt: skip
            parts.append(torch.where(drop, 0.0, text.float()))
        projected = self.proj(torch.cat(parts, dim=1))  # (B, out_dim)
        return torch.where(drop, null.to(projected.dtype), projected)


# ---------------------------------------------------------------------------------------------------------
# Attention and normalisation


def group_norm(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> nn.GroupNorm:
    """GroupNorm with up to `max_groups` groups of at least `min_channels_per_group` channels (as EDM)."""
    groups = max(1, min(max_groups, channels // min_channels_per_group))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6)


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens (B, N, C) -> (B, N, C) with scaled_dot_product_attention.

    Args:
        dim: token width C (divisible by heads).
        heads: number of attention heads.
        dropout: attention-probability dropout, active in training mode only.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise VcdmError(f"SelfAttention: width {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attend over the N tokens of x (B, N, C); mask (B, N) bool: the keys attended to (None: all)."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = mask[:, None, None, :] if mask is not None else None  # (B, 1, 1, N), broadcast
        # Vaswani et al. 2017, Eq. 1: softmax(q k^T / sqrt(d)) v, per head.
        h = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(h.transpose(1, 2).reshape(b, n, c))


class AttentionBlock2d(nn.Module):
    """Residual self-attention over the pixels of a feature map (B, C, H, W), as in DDPM's U-Net.

    The output projection starts at zero, so the block starts as the identity.

    Args:
        channels: feature channels C (divisible by heads).
        heads: number of attention heads.
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.attn = SelfAttention(channels, heads)
        nn.init.zeros_(self.attn.out.weight)
        nn.init.zeros_(self.attn.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Return x + attention(norm(x)), same shape as x."""
        b, c, h, w = x.shape
        tokens = self.norm(x).reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        return x + self.attn(tokens).transpose(1, 2).reshape(b, c, h, w)
