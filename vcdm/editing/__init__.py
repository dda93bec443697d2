"""Editing with the bipartite latent (y, x_T): inversion, variations, interpolation, embedding edits,
SDEdit and ILVR; filling in images: inpainting, uncropping and colourisation with Palette or RePaint
(docs/architecture.md, "Editing")."""

from vcdm.editing.directions import (
    direction_from_class_means,
    direction_from_images,
    direction_from_texts,
    edit_embedding,
)
from vcdm.editing.guided import ilvr, ilvr_sample, lowpass, sdedit
from vcdm.editing.inpaint import (
    PaletteModel,
    colorize,
    fill,
    inpaint,
    load_palette,
    palette_sample,
    repaint_sample,
    uncrop,
)
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
from vcdm.editing.repaint import repaint, repaint_walk, walk_steps
from vcdm.editing.text_diff import text_diff, text_direction

__all__ = [
    "PaletteModel",
    "colorize",
    "fill",
    "inpaint",
    "load_palette",
    "palette_sample",
    "repaint",
    "repaint_sample",
    "repaint_walk",
    "uncrop",
    "walk_steps",
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
    "text_diff",
    "text_direction",
    "variations",
]
