"""The embedding-conditioned U-Net: the decoder p_theta(x | y, a) (docs/architecture.md, "The two-stage model").

A DDPM/ADM-style U-Net (Ho et al. 2020; Dhariwal & Nichol 2021): residual blocks with GroupNorm, SiLU
and 3x3 convolutions, optional self-attention at chosen resolutions, strided-conv downsampling and
nearest-neighbour upsampling with skip connections. Every residual block is driven by one conditioning
vector: the noise-level embedding plus a learned linear projection of [y ++ one_hot(a)] (a learned null
vector replaces the projection for dropped conditions), applied by adaptive group-norm.
With emb_dim = num_classes = 0 it is the plain unconditional U-Net (the single-stage baseline).

As a super-resolution network (SR3, Saharia et al. 2021; vcdm.stages.upsampler) it also reads the upsampled
low-resolution image, concatenated to x (extra_in_channels), and, with aug_embedding, the noise level sigma_aug
of that image's conditioning augmentation (Ho et al. 2021): a second Fourier embedding of
c_aug = ln(sigma_aug + AUG_SIGMA_FLOOR) / 4 added to the conditioning vector beside the noise-level embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcdm.errors import VcdmError
from vcdm.networks.layers import (
    NOISE_EMBEDDINGS,
    AttentionBlock2d,
    ConditionProjector,
    NoiseEmbedding,
    check_choice,
    check_dropout,
    check_int,
    group_norm,
)

# sigma_aug = 0 (a clean low-res input) must have a finite level: c_aug = ln(sigma_aug + floor) / 4. Levels that
# visibly change an 8-bit image (>= one grey level, 2 / 255) are well above the floor: c_aug ~ ln(sigma_aug) / 4.
AUG_SIGMA_FLOOR = 1e-3
_AUG_FEATURE_SEED = 1  # the frequencies of the augmentation-level features (the noise level's use seed 0)


def aug_level(sigma_aug: Tensor) -> Tensor:
    """The network input for an augmentation level: c_aug = ln(sigma_aug + AUG_SIGMA_FLOOR) / 4, float32 (B,).

    On EDM's c_noise = ln(sigma) / 4 scale; sigma_aug = 0 maps to ln(1e-3) / 4 ~ -1.73, deterministically.
    """
    return torch.log(sigma_aug.float() + AUG_SIGMA_FLOOR) / 4


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the U-Net; `UNet(cfg)` rebuilds the network. JSON-serialisable with asdict."""

    image_size: int = 28  # input height = width; divisible by 2 ** (len(channel_mults) - 1)
    in_channels: int = 1  # channels of x
    out_channels: int | None = None  # None = in_channels
    extra_in_channels: int = 0  # channels of cond["lowres"] concatenated to x (SR3 super-res); 0 = none
    base_channels: int = 32  # channels at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 2)  # channel multiplier per resolution level (28 -> 14 -> 7)
    num_res_blocks: int = 1  # residual blocks per level on the way down (one more on the way up)
    attn_resolutions: tuple[int, ...] = ()  # feature-map sizes with self-attention, e.g. (7,)
    attn_heads: int = 4  # number of attention heads (channels at those levels must be divisible by it)
    dropout: float = 0.0  # dropout inside residual blocks, in [0, 1)
    noise_embedding: str = "fourier"  # "fourier" (EDM NCSN++) or "positional" (sinusoidal, DDPM)
    emb_dim: int = 0  # dimension of cond["emb"] (the embedding y); 0 = not conditioned on y
    num_classes: int = 0  # number of classes of cond["label"]; 0 = no labels
    aug_embedding: bool = False  # read cond["aug_sigma"], the low-res input's augmentation noise level (SR)
    extra_in_nullable: bool = False  # cond["null"] also zeroes cond["lowres"] (Palette's condition dropout)
    text_dim: int = 0  # dimension of cond["text_emb"] (a caption's CLIP text embedding); 0 = no text

    def __post_init__(self) -> None:
        owner = "UNetConfig"
        for field in ("channel_mults", "attn_resolutions"):
            value = getattr(self, field)
            if isinstance(value, list):  # a config read back from JSON
                object.__setattr__(self, field, tuple(value))
        check_int(owner, "image_size", self.image_size, 1)
        check_int(owner, "in_channels", self.in_channels, 1)
        if self.out_channels is not None:
            check_int(owner, "out_channels", self.out_channels, 1)
        check_int(owner, "extra_in_channels", self.extra_in_channels, 0)
        check_int(owner, "base_channels", self.base_channels, 1)
        if not isinstance(self.channel_mults, tuple) or not self.channel_mults:
            raise VcdmError(
                f"{owner}.channel_mults: expected a non-empty tuple of integers >= 1, "
                f"got {self.channel_mults!r}"
            )
        for mult in self.channel_mults:
            check_int(owner, "channel_mults", mult, 1)
        check_int(owner, "num_res_blocks", self.num_res_blocks, 1)
        check_int(owner, "attn_heads", self.attn_heads, 1)
        if not isinstance(self.attn_resolutions, tuple):
            raise VcdmError(
                f"{owner}.attn_resolutions: expected a tuple of feature-map sizes, "
                f"got {self.attn_resolutions!r}"
            )
        check_dropout(owner, self.dropout)
        check_choice(owner, "noise_embedding", self.noise_embedding, NOISE_EMBEDDINGS)
        check_int(owner, "emb_dim", self.emb_dim, 0)
        check_int(owner, "num_classes", self.num_classes, 0)
        check_int(owner, "text_dim", self.text_dim, 0)
        for flag in ("aug_embedding", "extra_in_nullable"):
            if not isinstance(getattr(self, flag), bool):
                raise VcdmError(f"{owner}.{flag}: expected true or false, got {getattr(self, flag)!r}")

    def check_sizes(self, owner: str = "UNetConfig") -> None:
        """Check the fields that depend on image_size (divisibility, attention resolutions).

        Kept out of __post_init__: image_size is filled in from the data when a run is resolved, so a config
        may name attention resolutions of the data's size before that (vcdm.stages.resolve_for_data).
        Called by UNet.__init__ and by the resolution, which passes the field's place (e.g. "decoder.net").
        """
        factor = self.size_multiple
        if self.image_size % factor:
            raise VcdmError(
                f"{owner}.image_size: expected a multiple of {factor} (2 ** (levels - 1) for "
                f"channel_mults={self.channel_mults}), got {self.image_size}"
            )
        sizes = self.resolutions
        for res in self.attn_resolutions:
            if res not in sizes:
                raise VcdmError(
                    f"{owner}.attn_resolutions: {res!r} is not a feature-map size of this "
                    f"network; expected values among {sizes}"
                )
            channels = self.base_channels * self.channel_mults[sizes.index(res)]
            if channels % self.attn_heads:
                raise VcdmError(
                    f"{owner}.attn_heads: {channels} channels at resolution {res} are not "
                    f"divisible by attn_heads={self.attn_heads}"
                )

    @property
    def size_multiple(self) -> int:
        """What every input side must be a multiple of: 2 ** (levels - 1), one halving per level below the top."""
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Feature-map size at each level, e.g. (28, 14, 7)."""
        return tuple(self.image_size // 2**level for level in range(len(self.channel_mults)))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with adaptive group-norm from the conditioning vector and a skip.

    h = conv1(silu(norm1(x))); h = norm2(h) * (1 + scale) + shift, with (scale, shift) = Linear(silu(emb));
    out = skip(x) + conv2(dropout(silu(h))). conv2 starts at zero, so the block starts as the identity.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.affine = nn.Linear(emb_ch, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x (B, in_ch, H, W), emb (B, emb_ch) -> (B, out_ch, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        # Adaptive group-norm (Dhariwal & Nichol 2021, Sec. 3): norm(h) * (1 + scale) + shift.
        scale, shift = self.affine(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class _Level(nn.Module):
    """One residual block, optionally followed by self-attention."""

    def __init__(self, in_ch: int, out_ch: int, emb_ch: int, cfg: UNetConfig, attention: bool) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_ch, cfg.dropout)
        self.attn = AttentionBlock2d(out_ch, cfg.attn_heads) if attention else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    """The decoder U-Net: F(x, c_noise, cond) with the same shape as x (see the module docstring).

    Args:
        cfg: the architecture.
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        cfg.check_sizes()
        self.cfg = cfg
        base, mults = cfg.base_channels, cfg.channel_mults
        emb_ch = 4 * base
        self.noise_embedding = NoiseEmbedding(cfg.noise_embedding, base, emb_ch)
        conditioned = cfg.emb_dim > 0 or cfg.num_classes > 0 or cfg.text_dim > 0
        self.condition = (
            ConditionProjector(cfg.emb_dim, cfg.num_classes, emb_ch, cfg.text_dim) if conditioned else None
        )
        self.conv_in = nn.Conv2d(cfg.in_channels + cfg.extra_in_channels, base, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels = [base]
        ch = base
        for level, mult in enumerate(mults):
            attention = cfg.resolutions[level] in cfg.attn_resolutions
            for _ in range(cfg.num_res_blocks):
                self.down.append(_Level(ch, base * mult, emb_ch, cfg, attention))
                ch = base * mult
                skip_channels.append(ch)
            if level < len(mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)

        self.mid = nn.ModuleList(
            [
                _Level(ch, ch, emb_ch, cfg, cfg.resolutions[-1] in cfg.attn_resolutions),
                _Level(ch, ch, emb_ch, cfg, False),
            ]
        )

        self.up = nn.ModuleList()
        for level in reversed(range(len(mults))):
            attention = cfg.resolutions[level] in cfg.attn_resolutions
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(_Level(ch + skip_channels.pop(), base * mults[level], emb_ch, cfg, attention))
                ch = base * mults[level]
            if level > 0:
                self.up.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)
                    )
                )

        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, cfg.out_channels or cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        # Created last and only when asked for: the modules above draw the same initial weights either way.
        self.aug_embedding = (
            NoiseEmbedding("fourier", base, emb_ch, seed=_AUG_FEATURE_SEED) if cfg.aug_embedding else None
        )

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        """Evaluate the network.

        Args:
            x: (B, in_channels, H, W) float, H and W multiples of 2 ** (levels - 1).
            c_noise: (B,) float noise level (EDM's ln(sigma) / 4, or a DDPM timestep).
            cond: optional dict with "emb" (B, emb_dim) float, "label" (B,) int64, "text_emb" (B, text_dim)
                float (a caption's CLIP text embedding; zeros = no caption), "null" (B,) bool (True =
                use the learned null condition for that sample) and, when extra_in_channels > 0, "lowres"
                (B, extra_in_channels, H, W), the low-resolution image already upsampled to H x W, and with
                aug_embedding, "aug_sigma" (B,) float >= 0, the std of the noise added to "lowres". "lowres" is
                any image condition read by concatenation (Palette's masked image and mask, too). "null" never
                affects "aug_sigma", and affects "lowres" only with extra_in_nullable (zeroed where null).

        Returns:
            (B, out_channels, H, W) float32, also under autocast.
        """
        cfg = self.cfg
        factor = cfg.size_multiple
        if x.ndim != 4 or x.shape[1] != cfg.in_channels or x.shape[2] % factor or x.shape[3] % factor:
            raise VcdmError(
                f"x: expected (B, {cfg.in_channels}, H, W) with H, W multiples of {factor}, "
                f"got {tuple(x.shape)}"
            )
        if cfg.extra_in_channels:
            # SR3 (Saharia et al. 2021): condition on the upsampled low-res image by concatenation.
            lowres = None if cond is None else cond.get("lowres")
            if lowres is None or lowres.shape != (x.shape[0], cfg.extra_in_channels, *x.shape[2:]):
                got = None if lowres is None else tuple(lowres.shape)
                raise VcdmError(
                    f"cond['lowres']: expected shape ({x.shape[0]}, {cfg.extra_in_channels}, "
                    f"{x.shape[2]}, {x.shape[3]}), got {got}"
                )
            null = None if cond is None else cond.get("null")
            if cfg.extra_in_nullable and null is not None:
                lowres = torch.where(null.reshape(-1, 1, 1, 1).to(lowres.device), 0.0, lowres)
            x = torch.cat([x, lowres.to(x.dtype)], dim=1)

        emb = self.noise_embedding(c_noise)  # (B, 4 * base)
        if self.aug_embedding is not None:
            sigma_aug = None if cond is None else cond.get("aug_sigma")
            if sigma_aug is None or sigma_aug.shape != (x.shape[0],):
                got = None if sigma_aug is None else tuple(sigma_aug.shape)
                raise VcdmError(f"cond['aug_sigma']: expected shape ({x.shape[0]},), got {got}")
            if bool((sigma_aug < 0).any()):
                raise VcdmError("cond['aug_sigma']: expected noise levels >= 0")
            emb = emb + self.aug_embedding(aug_level(sigma_aug).to(emb.device))
        if self.condition is not None:
            emb = emb + self.condition(cond, x.shape[0])

        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb) if isinstance(block, _Level) else block(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(block, _Level) else block(h)
        return self.conv_out(F.silu(self.norm_out(h))).float()
