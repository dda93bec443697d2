"""The Palette stage (Saharia et al. 2022, "Palette: Image-to-Image Diffusion Models"): inpainting, uncropping
and colourisation with one conditional U-Net, the condition image concatenated to the noisy target through the
same input path as the upsampler's low-res image (UNetConfig.extra_in_channels, cond["lowres"]).

    inpaint / uncrop:  c = [x * (1 - m), 2 m - 1]   the image with the holes zeroed, and the mask (+1 = fill)
    colorize:          c = luma(x)                  0.299 R + 0.587 G + 0.114 B, in [-1, 1]

Training masks are drawn on the fly from the loop's generator (vcdm.data.masks, palette.masks); condition
dropout marks a sample null, which the network (extra_in_nullable) reads as c = 0 — a value no real
condition takes, since a real mask channel is +-1 — and as the learned null y / label. So one model samples
conditionally, unconditionally, and with classifier-free guidance on c. The loss is the stage's denoising loss
over the whole image (as in Palette); at inference the known pixels are pasted back (vcdm.editing.inpaint).

In latent space (palette.space 'latent', LDM's inpainting model, Rombach et al. 2022) the target is the scaled
latent E(x) of the image (vcdm.latent) and the condition is read on the latent grid:

    inpaint / uncrop:  c = [E(x * (1 - m)), 2 maxpool_f(m) - 1]   a latent cell is a hole if any of its pixels is
    colorize:          c = E(luma(x) as RGB)

E encoding the masked image afresh for every training mask; the samples are decoded, then the known pixels
pasted back.

    vcdm train palette RUN --set palette.task=inpaint [--set palette.space=latent]
    vcdm edit inpaint RUN IMAGE --mask MASK.png --method palette
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from vcdm.config import DiffusionConfig, RunConfig, to_dict
from vcdm.data import ImageData
from vcdm.data.masks import MaskConfig, random_masks
from vcdm.errors import VcdmError
from vcdm.guidance import drop_condition
from vcdm.latent import LatentSpace, latent_mask
from vcdm.runs import RunDir
from vcdm.stages.diffusion import build_denoiser, denoising_loss, make_cond, semantic_tensors, square_size
from vcdm.stages.embedder import embedding_dim
from vcdm.stages.registry import Prepared, StageKind, register

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights


def luma(images: Tensor) -> Tensor:
    """Grayscale (B, 1, H, W) of RGB images (B, 3, H, W) in [-1, 1] (BT.601 luma; affine, so [-1, 1] stays)."""
    w = torch.tensor(LUMA, device=images.device, dtype=images.dtype).reshape(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True)


def condition_channels(task: str, channels: int, latent: bool = False) -> int:
    """Channels of Palette's condition image for `task` in a space of `channels` channels (the images', or the
    latents' when `latent`)."""
    if task == "colorize":
        return channels if latent else 1
    return channels + 1


def palette_condition(
    task: str, images: Tensor, masks: Tensor | None = None, space: LatentSpace | None = None
) -> Tensor:
    """Palette's condition image c (B, condition_channels, H, W), float32 (module doc); on the latent grid
    (B, condition_channels, H / f, W / f) when `space` is given.

    Args:
        task: "inpaint", "uncrop" or "colorize".
        images: (B, C, H, W) float in [-1, 1].
        masks: (B, 1, H, W) in {0, 1}, 1 = to fill (inpaint / uncrop).
        space: the LatentSpace of a latent Palette model, or None (pixels).
    """
    images = images.float()
    if task == "colorize":
        if images.shape[1] != 3:
            raise VcdmError(f"palette.task 'colorize' needs RGB images, got {images.shape[1]} channel(s)")
        gray = luma(images)
        return gray if space is None else space.encode(gray.expand(-1, 3, -1, -1)).to(images.device)
    if masks is None or masks.shape != (images.shape[0], 1, *images.shape[2:]):
        got = None if masks is None else tuple(masks.shape)
        raise VcdmError(f"masks: expected shape ({images.shape[0]}, 1, {images.shape[2]}, {images.shape[3]}), "
                        f"got {got}")  # fmt: skip
    masks = masks.to(images.device, torch.float32)
    masked = images * (1 - masks)
    if space is not None:
        masked, masks = space.encode(masked).to(images.device), latent_mask(masks, space.cfg.factor)
    return torch.cat([masked, 2 * masks - 1], dim=1)


@dataclass
class PaletteTask:
    """Denoising loss of x0 = batch["image"] given Palette's condition of it, with a fresh mask per sample."""

    task: str
    diffusion: DiffusionConfig
    masks: MaskConfig
    use_emb: bool = False
    use_label: bool = False
    cond_drop_prob: float = 0.0
    # latent space: x0 = batch["image"] holds the scaled latents, batch["pixels"] the images the condition is made
    # from (uint8), encoded with `space`
    space: LatentSpace | None = None

    def loss(self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        x0 = images = batch["image"]
        if self.space is not None:
            images = batch["pixels"].float() / 127.5 - 1
            self.space.to(x0.device)
        b, size = len(x0), images.shape[-1]
        # every draw comes from the loop's generator, in a fixed order: masks, dropout, then the loss's
        masks = None
        if self.task != "colorize":
            masks = random_masks(self.task, b, size, generator, self.masks).to(x0.device)
        cond = {"lowres": palette_condition(self.task, images, masks, self.space)}
        cond |= make_cond(batch, self.use_emb, self.use_label) or {}
        cond = drop_condition(cond, self.cond_drop_prob, b, generator)
        return denoising_loss(model, x0, cond, generator, self.diffusion)


def _resolve_palette(cfg: RunConfig, data: ImageData, run: RunDir) -> RunConfig:
    """Fill in the data-derived fields (checked in prepare: Palette is optional and must not stop other stages)."""
    st = cfg.palette
    _, c, h, _ = data.images.shape
    emb_dim = (embedding_dim(cfg, run) or st.net.emb_dim) if st.uses_embedding else 0
    latent = st.space == "latent" and h % cfg.autoencoder.net.factor == 0  # else prepare names the field
    if latent:  # the U-Net works on the autoencoder's latents (vcdm.latent)
        h, c = h // cfg.autoencoder.net.factor, cfg.autoencoder.net.latent_channels
    net = replace(st.net, image_size=h, in_channels=c, extra_in_channels=condition_channels(st.task, c, latent),
                  extra_in_nullable=True, emb_dim=emb_dim,
                  num_classes=data.num_classes if st.uses_label else 0)  # fmt: skip
    return replace(cfg, palette=replace(st, net=net))


def _prepare_palette(cfg: RunConfig, data: ImageData, run: RunDir) -> Prepared:
    st = cfg.palette
    c = data.images.shape[1]
    square_size(data)
    if st.task == "colorize" and c != 3:
        raise VcdmError(f"palette.task 'colorize' needs RGB data, but {data.source} has {c} channel(s); "
                        f"choose one of ('inpaint', 'uncrop')")  # fmt: skip
    st.net.check_sizes("palette.net")
    tensors: dict[str, Tensor] = {"image": data.images}
    tensors |= semantic_tensors("palette", st, data, run)
    meta = {"net": to_dict(st.net), "diffusion": to_dict(st.diffusion), "condition": st.condition,
            "task": st.task, "masks": to_dict(st.masks)}  # fmt: skip
    task = PaletteTask(st.task, st.diffusion, st.masks, use_emb=st.uses_embedding, use_label=st.uses_label,
                       cond_drop_prob=st.cond_drop_prob)  # fmt: skip
    if st.space == "latent":  # the targets are latents; the condition is encoded from the pixels per batch
        from vcdm.stages.autoencoder import latent_targets

        task.space, tensors["image"], latent = latent_targets(cfg, data, run, "palette")
        tensors["pixels"] = data.images
        meta |= {"space": "latent", "latent": latent}
    return Prepared(meta, tensors, task)


register(StageKind(
    name="palette", summary="Palette image-to-image U-Net p(x | masked image or grayscale [, y, label]): "
    "inpainting, uncropping or colourisation (palette.task)", train_path="palette.train",
    prepare=_prepare_palette, build=build_denoiser, init_stream=0xA1, role="palette", resolve=_resolve_palette,
))  # fmt: skip
