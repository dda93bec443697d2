"""The upsampler stage: SR3 super-resolution (Saharia et al. 2021) with conditioning augmentation (Ho et al. 2021,
Cascaded Diffusion Models), the top of a cascade prior -> decoder at low_res -> upsampler at the data's size.

The U-Net denoises the high-res image x given the low-res image x_lr, read as extra input channels:

    cond["lowres"]    = up(x_lr) + sigma_aug * n,   n ~ N(0, I) at the target size,
    cond["aug_sigma"] = sigma_aug                   (when the augmentation is on),

with up() bicubic interpolation (align_corners=False, clamped to [-1, 1]). The network embeds
c_aug = ln(sigma_aug + 1e-3) / 4 with its own Fourier features and MLP and adds it to the noise-level embedding
(vcdm.networks.unet). In training x_lr is the run's image at low_res (the antialiased resize that the base
stage trains on, vcdm.data.resize_images), optionally blurred first, and sigma_aug is drawn per sample
(ConditioningAugment); at sampling time x_lr is the base stage's sample and sigma_aug one chosen level
(vcdm.pipeline.upsampler_component). Loss, preconditioning, samplers and classifier-free guidance are those of
every image stage; condition dropout marks y / label as null and never touches the low-res image.

With upsampler.residual (SRDiff, Li et al. 2022) the diffusion runs on the detail r = x - up(x_lr) rather than on
x: the denoiser (vcdm.diffusion.ResidualDenoiser) is given cond["base"] = up(x_lr), the un-noised bicubic image,
and returns base + D_r(x - base). At high noise it therefore returns about the bicubic image, and the network
spends itself on the detail, whose std (measured at training and stored as meta["residual_std"], about 0.09 for
32 -> 64 emoji) sets diffusion.sigma_data; p_mean and sigma_max move down with it (the emoji preset's values).

With upsampler.train_crop (as DALL-E 2 trains its upsamplers, on quarter-area crops) each training pair is a
random crop of the high-res image and the same window of its low-res one (the corner drawn on the low-res grid),
so a crop of half the side costs a quarter of the compute; the network is convolutional and samples whole images.

In latent space (upsampler.space 'latent', LDM-SR, Rombach et al. 2022) x is the scaled latent E(x_hr) of the
run's autoencoder (vcdm.latent) and up() brings x_lr to the latent grid H / f: unchanged when low_res is H / f,
as in LDM-SR; by pixel_unshuffle when the grid is r times smaller (each r x r block of pixels becomes r^2
channels, so the 32x32 base image reaches a 16x16 latent grid losslessly as 12 channels, where a resize would
discard three quarters of it); bicubic otherwise. The augmentation noise stays on pixel values, its level is
given to the network as before, and the pipeline decodes the sample.

A cascade from the command line (data at 64x64, the base stages at 32x32):

    vcdm train embedder RUN --set data.source=DATA --set data.image_size=64 --set decoder.image_size=32
    vcdm embed RUN && vcdm train prior RUN && vcdm train decoder RUN
    vcdm train upsampler RUN                   # upsampler.low_res follows decoder.image_size
    vcdm sample RUN --num 16 --aug-sigma 0.05  # 64x64 samples; the 32x32 ones in OUT/low_res/
    vcdm upsample RUN a.png b.png              # upsample given images
    vcdm train upsampler RUN --set upsampler.space=latent --set upsampler.diffusion.sigma_data=1  # after the
                                               # autoencoder (vcdm train autoencoder RUN)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vcdm.config import ConditioningAugment, DiffusionConfig, RunConfig, to_dict
from vcdm.data import ImageData
from vcdm.errors import VcdmError
from vcdm.guidance import drop_condition
from vcdm.runs import RunDir
from vcdm.stages.diffusion import build_denoiser, denoising_loss, make_cond, semantic_tensors, square_size
from vcdm.stages.embedder import embedding_dim
from vcdm.stages.registry import Prepared, StageKind, register

UPSAMPLE_MODE = "bicubic"  # how x_lr is brought to the target size, in training and at sampling
UNSHUFFLE = "pixel_unshuffle"  # how it reaches a latent grid an integer factor below low_res


def lowres_mode(low: int, size: int) -> str:
    """How x_lr (low x low) reaches the target grid of side `size`: UNSHUFFLE where the grid is an integer factor
    r below low (a latent grid: each r x r block of pixels becomes r^2 channels, torch's pixel_unshuffle, so
    nothing of x_lr is averaged away), else UPSAMPLE_MODE (bicubic; antialiased where it shrinks)."""
    return UNSHUFFLE if size < low and low % size == 0 else UPSAMPLE_MODE


def lowres_channels(channels: int, low: int, size: int, mode: str) -> int:
    """Channels of the condition made from x_lr with `channels` channels: channels * r^2 for UNSHUFFLE."""
    return channels * (low // size) ** 2 if mode == UNSHUFFLE else channels


def upsample_lowres(x_lr: Tensor, size: int, mode: str = UPSAMPLE_MODE) -> Tensor:
    """Low-res images (B, C, h, w) in [-1, 1] -> the target grid (B, C', size, size), float32. UPSAMPLE_MODE:
    bicubic (antialiased where size < h), clamped to [-1, 1] (bicubic overshoots at edges), C' = C; UNSHUFFLE:
    pixel_unshuffle by h / size, C' = C (h / size)^2 (`lowres_mode`)."""
    x_lr = x_lr.float()
    if x_lr.shape[-2:] == (size, size):
        return x_lr
    if mode == UNSHUFFLE:
        return F.pixel_unshuffle(x_lr, x_lr.shape[-1] // size)
    return F.interpolate(x_lr, size=(size, size), mode=UPSAMPLE_MODE, align_corners=False,
                         antialias=size < x_lr.shape[-1]).clamp(-1, 1)  # fmt: skip


def lowres_condition(
    x_lr: Tensor,
    size: int,
    sigma_aug: Tensor,
    noise: Tensor,
    level: bool,
    mode: str = UPSAMPLE_MODE,
    residual: bool = False,
) -> dict[str, Tensor]:
    """The upsampler's image condition: {"lowres": up(x_lr) + sigma_aug * noise[, "aug_sigma": sigma_aug]
    [, "base": up(x_lr)]}.

    Args:
        x_lr: (B, C, h, w) in [-1, 1]. size: the target size. sigma_aug: (B,) levels >= 0.
        noise: (B, C', size, size) unit Gaussian, C' = `lowres_channels` (unused where sigma_aug is 0: level 0 is
            deterministic).
        level: whether the network reads the level (its net.aug_embedding).
        mode: how x_lr reaches the target size (`upsample_lowres`).
        residual: add "base", the un-noised up(x_lr) that a residual upsampler's denoiser adds its residual to
            (vcdm.diffusion.ResidualDenoiser).
    """
    up = upsample_lowres(x_lr, size, mode)
    sigma = sigma_aug.to(up.device, torch.float32)
    cond = {"lowres": up + sigma.reshape(-1, 1, 1, 1) * noise.to(up.device, torch.float32)}
    if level:
        cond["aug_sigma"] = sigma
    if residual:
        cond["base"] = up
    return cond


def sample_aug_sigma(aug: ConditioningAugment, batch: int, generator: torch.Generator) -> Tensor:
    """Training levels sigma_aug (B,): 0 with probability zero_prob, else log-uniform on [sigma_min, sigma_max]
    (ln sigma_aug uniform) or uniform on [0, sigma_max]; all zeros when the noise is "none"."""
    if not aug.noised:
        return torch.zeros(batch, device=generator.device)
    u = torch.rand(batch, generator=generator, device=generator.device)
    clean = torch.rand(batch, generator=generator, device=generator.device) < aug.zero_prob
    if aug.noise == "log-uniform":
        lo, hi = math.log(aug.sigma_min), math.log(aug.sigma_max)
        sigma = (lo + (hi - lo) * u).exp()
    else:
        sigma = aug.sigma_max * u
    return torch.where(clean, 0.0, sigma)


def random_blur(
    x: Tensor, prob: float, sigma_range: tuple[float, float], generator: torch.Generator
) -> Tensor:
    """CDM's blur augmentation: each image, with probability `prob`, gets a separable Gaussian blur of std
    uniform in sigma_range (pixels; kernel radius ceil(3 * hi), edges replicated); the others are unchanged.

    Args:
        x: (B, C, H, W) float. generator: the source of the draws.
    """
    if prob <= 0:
        return x
    b, c, h, w = x.shape
    blur = torch.rand(b, generator=generator, device=generator.device) < prob
    lo, hi = sigma_range
    std = lo + (hi - lo) * torch.rand(b, generator=generator, device=generator.device)
    radius = max(1, math.ceil(3 * hi))
    t = torch.arange(-radius, radius + 1, device=generator.device, dtype=torch.float32)
    kernel = (-(t[None] ** 2) / (2 * std[:, None] ** 2)).exp()
    kernel = kernel / kernel.sum(1, keepdim=True)  # (B, K)
    delta = (t == 0).float()[None].expand(b, -1)
    kernel = torch.where(blur[:, None], kernel, delta).to(x.device, x.dtype).repeat_interleave(c, dim=0)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)  # along W
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)  # along H
    return y.reshape(b, c, h, w)


def random_crops(x: Tensor, x_lr: Tensor, crop: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random crop x crop window of each high-res image (B, C, H, W) and the matching window of its low-res
    image (B, C, h, w): the window's corner is drawn on the low-res grid, so the two cover the same area.
    `crop` must divide by H / h."""
    scale = x.shape[-1] // x_lr.shape[-1]
    lo = crop // scale
    corners = torch.randint(
        0, x_lr.shape[-1] - lo + 1, (len(x), 2), generator=generator, device=generator.device
    )
    hi, low = [], []
    for (i, j), img, img_lr in zip(corners.tolist(), x, x_lr, strict=True):
        hi.append(img[:, i * scale : i * scale + crop, j * scale : j * scale + crop])
        low.append(img_lr[:, i : i + lo, j : j + lo])
    return torch.stack(hi), torch.stack(low)


@dataclass
class UpsamplerTask:
    """Denoising loss of the upsampler: x0 = batch["image"] given its noised, upsampled batch["lowres"]."""

    diffusion: DiffusionConfig
    augment: ConditioningAugment
    use_emb: bool = False
    use_label: bool = False
    cond_drop_prob: float = 0.0
    mode: str = UPSAMPLE_MODE  # how x_lr reaches x0's grid (`lowres_mode`)
    residual: bool = False  # the model denoises x0 - up(x_lr) (vcdm.diffusion.ResidualDenoiser)
    crop: int | None = None  # train on random crops of this side (and the matching low-res crops)

    def loss(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        x0, x_lr = batch["image"], batch["lowres"]
        if self.crop is not None:
            x0, x_lr = random_crops(x0, x_lr, self.crop, generator)
        if x_lr.dtype == torch.uint8:
            x_lr = x_lr.float() / 127.5 - 1
        b, aug = len(x0), self.augment
        # every draw comes from the loop's generator, in a fixed order: crops, blur, levels, noise, dropout, then
        # the loss's
        x_lr = random_blur(x_lr, aug.blur_prob, aug.blur_sigma, generator)
        sigma_aug = sample_aug_sigma(aug, b, generator)
        size = x0.shape[-1]  # the latent grid's in latent space: the noise is on the low-res image's values
        c = lowres_channels(x_lr.shape[1], x_lr.shape[-1], size, self.mode)
        noise = torch.randn((b, c, size, size), generator=generator, device=generator.device)
        cond = lowres_condition(x_lr, size, sigma_aug, noise, aug.noised, self.mode, self.residual)
        cond |= make_cond(batch, self.use_emb, self.use_label) or {}
        cond = drop_condition(cond, self.cond_drop_prob, b, generator)  # sets cond["null"] only
        return denoising_loss(model, x0, cond, generator, self.diffusion)


def residual_std(data: ImageData, low: int, limit: int = 4096) -> float:
    """The std of the residual x - up(x_lr) over the first `limit` images of `data` and their low x low
    versions: the sigma_data a residual upsampler's diffusion should have."""
    x = data.as_float(slice(0, limit))
    x_lr = data.images_at(low)[:limit].float() / 127.5 - 1
    return round(float((x - upsample_lowres(x_lr, x.shape[-1])).double().std()), 4)


def _finish_upsampler(model: nn.Module, cfg: RunConfig, data: ImageData, run: RunDir) -> dict[str, float]:
    """Export meta measured after training (kept out of the meta a resumed run must match): a residual
    upsampler's residual std, for a user to check diffusion.sigma_data against."""
    return {"residual_std": residual_std(data, check_upsampler(cfg, data))} if cfg.upsampler.residual else {}


def low_res_for(cfg: RunConfig, size: int) -> int:
    """The upsampler's input size for data of `size`: upsampler.low_res, or when that is None, decoder.image_size
    if the decoder samples below the data's size, else half the data's size. Worked out when the upsampler is
    trained (and recorded in its export) rather than written into config.json, so that it follows a
    decoder.image_size set later."""
    if cfg.upsampler.low_res is not None:
        return cfg.upsampler.low_res
    below = cfg.decoder.image_size
    return below if below is not None and below < size else size // 2


def _resolve_upsampler(cfg: RunConfig, data: ImageData, run: RunDir) -> RunConfig:
    """Fill in the data-derived fields. Nothing is checked here: the upsampler is optional, and a config that
    does not fit the data must not stop the other stages from training (`check_upsampler` does, in prepare)."""
    st = cfg.upsampler
    _, c, h, _ = data.images.shape
    emb_dim = (embedding_dim(cfg, run) or st.net.emb_dim) if st.uses_embedding else 0
    size, channels = h, c
    if st.space == "latent" and h % cfg.autoencoder.net.factor == 0:  # else check_upsampler names the field
        size, channels = h // cfg.autoencoder.net.factor, cfg.autoencoder.net.latent_channels
    low = low_res_for(cfg, h)
    extra = lowres_channels(c, low, size, lowres_mode(low, size))
    net = replace(st.net, image_size=size, in_channels=channels, extra_in_channels=extra, emb_dim=emb_dim,
                  num_classes=data.num_classes if st.uses_label else 0, aug_embedding=st.augment.noised)  # fmt: skip
    return replace(cfg, upsampler=replace(st, net=net))


def check_upsampler(cfg: RunConfig, data: ImageData) -> int:
    """The upsampler's input size (`low_res_for`), after one-line VcdmErrors, naming the field, for an upsampler
    config that does not fit the data."""
    h = square_size(data)
    low = low_res_for(cfg, h)
    if low >= h:
        raise VcdmError(f"upsampler.low_res must be below the data's size {h} (data.image_size), got {low}")
    if h % low:
        raise VcdmError(f"upsampler.low_res must divide the data's size {h} (data.image_size), got {low}")
    cfg.upsampler.net.check_sizes("upsampler.net")
    crop = cfg.upsampler.train_crop
    if crop is not None:
        factor = cfg.upsampler.net.size_multiple
        step = math.lcm(h // low, factor)
        if crop > h or crop % step:
            raise VcdmError(f"upsampler.train_crop must be at most the data's size {h} and a multiple of {step} "
                            f"(the scale {h // low} and the U-Net's 2 ** (levels - 1) = {factor}), got {crop}")  # fmt: skip
    return low


def _prepare_upsampler(cfg: RunConfig, data: ImageData, run: RunDir) -> Prepared:
    st = cfg.upsampler
    low = check_upsampler(cfg, data)
    # the low-res inputs are the very images a base stage at low_res trains on
    tensors: dict[str, Tensor] = {"image": data.images, "lowres": data.images_at(low)}
    tensors |= semantic_tensors("upsampler", st, data, run)
    mode = lowres_mode(low, st.net.image_size)
    meta = {"net": to_dict(st.net), "diffusion": to_dict(st.diffusion), "condition": st.condition,
            "low_res": low, "upsample": mode, "augment": to_dict(st.augment)}  # fmt: skip
    task = UpsamplerTask(st.diffusion, st.augment, use_emb=st.uses_embedding, use_label=st.uses_label,
                         cond_drop_prob=st.cond_drop_prob if st.condition != "none" else 0.0, mode=mode,
                         residual=st.residual, crop=st.train_crop)  # fmt: skip
    if st.residual:
        meta["residual"] = True
    if st.train_crop is not None:  # how it trains: a resumed run must crop alike
        meta["train_crop"] = st.train_crop
    if st.space == "latent":  # the targets are the high-res images' latents; the low-res images stay pixels
        from vcdm.stages.autoencoder import latent_targets

        _, tensors["image"], latent = latent_targets(cfg, data, run, "upsampler")
        meta |= {"space": "latent", "latent": latent}
    return Prepared(meta, tensors, task)


register(StageKind(
    name="upsampler", summary="SR3 super-resolution U-Net p(x | x at upsampler.low_res [, y, label]) with "
    "conditioning augmentation: the top of a cascade", train_path="upsampler.train", prepare=_prepare_upsampler,
    build=build_denoiser, init_stream=0x5E, role="upsampler", resolve=_resolve_upsampler, finish=_finish_upsampler,
))  # fmt: skip
