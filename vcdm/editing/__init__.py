"""Editing with the bipartite latent (y, x_T): inversion, variations, interpolation, embedding edits,
SDEdit and ILVR (docs/architecture.md, "Editing")."""

from vcdm.editing.directions import (
    direction_from_class_means,
    direction_from_images,
    direction_from_texts,
    edit_embedding,
)
from vcdm.editing.guided import ilvr, ilvr_sample, lowpass, sdedit
from vcdm.editing.latent import (
    embed,
    interpolate,
    interpolate_latents,
    invert,
    load_latent,
    load_pipeline,
    psnr,
    reconstruct,
    save_latent,
    slerp,
    variations,
)

__all__ = [
    "direction_from_class_means",
    "direction_from_images",
    "direction_from_texts",
    "edit_embedding",
    "embed",
    "ilvr",
    "ilvr_sample",
    "interpolate",
    "interpolate_latents",
    "invert",
    "load_latent",
    "load_pipeline",
    "lowpass",
    "psnr",
    "reconstruct",
    "save_latent",
    "sdedit",
    "slerp",
    "variations",
]
