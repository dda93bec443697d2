"""Stages: every trainable kind of model, registered once and trained, exported and loaded by one path.

`KINDS` maps a kind's name to its `StageKind`; `train_stage(name, run_dir, cfg, data)` trains any of them;
`load_model(stage_dir)` loads any export. Importing this package registers the built-in kinds.
"""

# isort: skip_file
from vcdm.stages.registry import (
    KINDS,
    Prepared,
    StageKind,
    build_from_meta,
    get_kind,
    load_model,
    register,
    resolve_for_data,
    train_stage,
)
from vcdm.stages.embedder import (  # registration order: embedder, prior, decoders, classifiers
    EmbeddingSet,
    compute_embeddings,
    embedding_dim,
    load_embedder,
    load_embeddings,
)
from vcdm.stages.diffusion import DiffusionTask, build_denoiser, make_cond, wrap_denoiser
from vcdm.stages.classifier import ClassifierTask, load_noisy_classifier, random_translate
from vcdm.stages import upsampler as upsampler  # registers "upsampler" (SR3 with conditioning augmentation)
from vcdm.stages import autoencoder as autoencoder  # registers "autoencoder" (latent diffusion's first stage)
from vcdm.stages import palette as palette  # registers "palette" (image-to-image: inpaint, uncrop, colorize)
from vcdm.stages import clip as clip  # registers "clip" (a CLIP trained on (image, caption) pairs)

__all__ = [
    "KINDS",
    "ClassifierTask",
    "DiffusionTask",
    "EmbeddingSet",
    "Prepared",
    "StageKind",
    "build_denoiser",
    "build_from_meta",
    "compute_embeddings",
    "embedding_dim",
    "get_kind",
    "load_embedder",
    "load_embeddings",
    "load_model",
    "load_noisy_classifier",
    "make_cond",
    "random_translate",
    "register",
    "resolve_for_data",
    "train_stage",
    "wrap_denoiser",
]
