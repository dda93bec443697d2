"""The embedder stage and the run's embeddings.

The learned embedder (a small contrastive image encoder, no labels) is a trainable kind; a local CLIP or
precomputed embeddings need no training. `compute_embeddings` embeds the training set once (plus augmented
copies) into RUN/embeddings.safetensors with the statistics that standardise them for the prior and decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import Tensor

from vcdm.config import RunConfig, from_dict, to_dict
from vcdm.data import ImageData
from vcdm.embedders import ContrastiveTask, ConvEncoder, EmbeddingStats, LearnedEmbedder, embed_images
from vcdm.embedders.learned import EncoderConfig
from vcdm.errors import VcdmError
from vcdm.fileio import atomic_write_bytes
from vcdm.runs import RunDir
from vcdm.seeding import mix_seed
from vcdm.stages.registry import Prepared, StageKind, load_model, register

EMBED_STREAM = 0xA6  # the augmentations of the embedded copies


def _resolve_embedder(cfg: RunConfig, data: ImageData, run: RunDir) -> RunConfig:
    _, c, h, _ = data.images.shape
    size = cfg.embedder.image_size
    if size is not None and size > h:
        raise VcdmError(f"embedder.image_size must be at most the data's size {h}, got {size}")
    encoder = replace(cfg.embedder.encoder, image_size=size or h, in_channels=c)
    return replace(cfg, embedder=replace(cfg.embedder, encoder=encoder))


def _prepare_embedder(cfg: RunConfig, data: ImageData, run: RunDir) -> Prepared:
    if cfg.embedder.kind != "learned":
        raise VcdmError(f"embedder.kind is {cfg.embedder.kind!r}: only the 'learned' embedder is trained")
    enc = cfg.embedder.encoder
    images = data.images_at(enc.image_size)  # embedder.image_size
    return Prepared({"net": to_dict(enc)}, {"image": images}, ContrastiveTask(enc.augment))


def _build_embedder(meta: dict[str, Any]) -> ConvEncoder:
    return ConvEncoder(from_dict(EncoderConfig, meta["net"]))


register(StageKind(
    name="embedder", summary="contrastive image encoder trained without labels (embedder.kind 'learned')",
    train_path="embedder.train", prepare=_prepare_embedder, build=_build_embedder, init_stream=0xE,
    role="embedder", resolve=_resolve_embedder,
))  # fmt: skip


def load_embedder(run_dir: str | Path, cfg: RunConfig):
    """The run's embedder: the trained learned one, a local CLIP, a CLIP trained here, or (precomputed) None."""
    kind = cfg.embedder.kind
    if kind == "learned":
        model, _ = load_model(RunDir(run_dir).stage("embedder"), "embedder")
        return LearnedEmbedder(model)
    if kind == "clip":
        from vcdm.embedders import ClipEmbedder

        return ClipEmbedder.from_pretrained(cfg.embedder.path)
    if kind == "clip-trained":  # the image tower of `vcdm train clip`
        from vcdm.stages.clip import load_clip

        return load_clip(cfg.embedder.path or RunDir(run_dir).stage("clip"))
    return None


@dataclass
class EmbeddingSet:
    emb: Tensor  # raw embeddings (N * (1 + copies), D): rows [0, N) embed the dataset in order
    stats: EmbeddingStats  # per-dimension standardisation, computed on all rows
    num_images: int

    @property
    def dim(self) -> int:
        return self.emb.shape[1]

    def normalized(self) -> Tensor:
        return self.stats.normalize(self.emb)


def compute_embeddings(
    run_dir: str | Path, cfg: RunConfig, data: ImageData, *, progress: bool = True
) -> EmbeddingSet:
    """Embed the training set (and `embedder.aug_copies` augmented copies) into RUN/embeddings.safetensors."""
    st = cfg.embedder
    if st.kind == "precomputed":
        from vcdm.embedders import PrecomputedEmbedder

        if st.aug_copies:
            raise VcdmError("embedder.aug_copies must be 0 with precomputed embeddings (no images to embed)")
        emb = PrecomputedEmbedder.from_npy(st.path, num_images=len(data)).embeddings.float()
    else:
        embedder = load_embedder(run_dir, cfg)
        gen = torch.Generator().manual_seed(mix_seed(st.train.seed, EMBED_STREAM))
        images = data.images_at(st.image_size)  # the embedder's size (None: the data's)
        emb = embed_images(embedder, images, copies=st.aug_copies, augment_cfg=st.augment, generator=gen,
                           progress=progress)  # fmt: skip
    stats = EmbeddingStats.from_embeddings(emb)
    tensors = {"emb": emb.contiguous()} | {f"stats.{k}": v.contiguous() for k, v in stats.to_dict().items()}
    meta = {"num_images": str(len(data)), "copies": str(st.aug_copies), "embedder": st.kind}
    atomic_write_bytes(RunDir(run_dir).embeddings, save(tensors, metadata=meta))
    return EmbeddingSet(emb, stats, len(data))


def load_embeddings(run_dir: str | Path | RunDir) -> EmbeddingSet:
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    path = run.embeddings
    if not path.is_file():
        raise VcdmError(f"{path}: missing; run `vcdm embed {run.path}` first")
    t = load_file(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    stats = EmbeddingStats.from_dict({k[6:]: v for k, v in t.items() if k.startswith("stats.")})
    return EmbeddingSet(t["emb"], stats, int(meta["num_images"]))


def embedding_dim(cfg: RunConfig, run: RunDir) -> int | None:
    """The size of the run's embeddings y: from RUN/embeddings.safetensors when it exists, else what the
    learned embedder will produce; None when unknown until `vcdm embed` (a CLIP or precomputed embedder)."""
    if run.embeddings.is_file():
        try:
            with safe_open(str(run.embeddings), "pt") as f:
                return int(f.get_slice("emb").get_shape()[1])
        except Exception:  # an unreadable file is reported by load_embeddings where it is needed
            return None
    return cfg.embedder.encoder.dim if cfg.embedder.kind == "learned" else None
