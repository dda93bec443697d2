"""Text conditioning from the run's trained CLIP (RUN/clip, frozen): what a text-conditioned prior or decoder
reads for a caption, and the checks that tie the stages to that CLIP.

Per caption the frozen text tower gives (DALL-E 2, Ramesh et al. 2022, Sec. 2.1):

| key | value | read by |
| --- | --- | --- |
| `"text_tokens"` | (B, L, width) float32, the text tower's last hidden states, zero at padding | the prior |
| `"text_mask"` | (B, L) bool, True at the caption's tokens | the prior |
| `"text_emb"` | (B, dim) float32, the pooled, projected, L2-normalised CLIP text embedding | prior, decoder |

L is the tower's context length (clip.text.context_length), so every caption has the same shape. For training
the encodings are computed once per distinct caption (`caption_table`) and looked up by caption index; at
sampling time the pipeline encodes its prompts (`TextEncoder`). Nothing is stored on disk: RUN/clip is the
source.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vcdm.config import RunConfig
from vcdm.data import ImageData
from vcdm.errors import VcdmError
from vcdm.runs import RunDir
from vcdm.text.retrieval import caption_ids, heldout_mask
from vcdm.text.towers import MINILM_WIDTH, masked_mean

TEXT_KEYS = ("text_tokens", "text_mask", "text_emb")
_CHUNK = 256  # captions per text-tower call


def clip_text_shape(run_dir: str | Path | RunDir) -> dict[str, int] | None:
    """{"length", "width", "dim"} of the text conditioning of RUN/clip, read from its model.json (no weights
    loaded); None when the run has no clip export yet."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    path = run.stage("clip") / "model.json"
    if not path.is_file():
        return None
    net = json.loads(path.read_text())["net"]
    text = net["text"]
    width = MINILM_WIDTH if text["kind"] == "minilm" else int(text["width"])
    return {"length": int(text["context_length"]), "width": width, "dim": int(net["dim"])}


def require_clip(run: RunDir, what: str) -> dict[str, Any]:
    """RUN/clip's model.json, or a one-line VcdmError saying `what` needs `vcdm train clip RUN` first."""
    path = run.stage("clip") / "model.json"
    if not path.is_file():
        raise VcdmError(
            f"{what} needs the run's CLIP ({path} is missing): run `vcdm train clip {run.path}` first"
        )
    return json.loads(path.read_text())


def check_clip_embeddings(cfg: RunConfig, run: RunDir, what: str) -> None:
    """Raise a one-line VcdmError unless the run's embeddings y are RUN/clip's image embeddings, so that y and a
    caption's text embedding live in one space (embedder.kind = clip-trained, embedder.path null or RUN/clip)."""
    path = cfg.embedder.path
    same = path is None or Path(path).resolve() == run.stage("clip").resolve()
    if cfg.embedder.kind != "clip-trained" or not same:
        raise VcdmError(f"{what} needs the run's embeddings to be its CLIP's image embeddings (embedder.kind "
                        f"'clip-trained', embedder.path null), got embedder.kind {cfg.embedder.kind!r}"
                        f"{'' if same else f' with embedder.path {path!r}'}; re-run `vcdm embed`")  # fmt: skip


@dataclass
class TextEncoder:
    """Captions -> the text conditioning dict (module docstring) with a frozen trained CLIP.

    Args:
        clip: a `vcdm.stages.clip.TrainedClip` (`load_clip(RUN/clip)`).
    """

    clip: Any

    @classmethod
    def from_run(cls, run_dir: str | Path, device: torch.device | str = "cpu") -> TextEncoder:
        from vcdm.stages.clip import load_clip

        run = RunDir(run_dir)
        require_clip(run, "text conditioning")
        return cls(load_clip(run.stage("clip")).to(device))

    @property
    def length(self) -> int:
        return self.clip.tokenizer.context_length

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """The conditioning of B texts (checked: an empty text, or one longer than the tower's context, is a
        one-line VcdmError): "text_tokens" (B, L, width), "text_mask" (B, L), "text_emb" (B, dim), on the
        CLIP's device."""
        ids = self.clip.tokenizer.encode(list(texts)).to(self.clip.device)  # (B, L)
        model, parts = self.clip.model, []
        for chunk in ids.split(_CHUNK):
            h, mask = model.text.hidden(chunk)  # (b, L', width), trimmed to the chunk's longest text
            tokens = torch.zeros(len(chunk), self.length, h.shape[-1], device=h.device)
            full_mask = torch.zeros(len(chunk), self.length, dtype=torch.bool, device=h.device)
            tokens[:, : h.shape[1]] = torch.where(mask[..., None], h.float(), 0.0)
            full_mask[:, : h.shape[1]] = mask
            # the pooled embedding exactly as the CLIP computes it (encode_tokens)
            emb = model.project_text(masked_mean(h, mask)).float()
            parts.append((tokens, full_mask, emb))
        return {key: torch.cat([p[i] for p in parts]) for i, key in enumerate(TEXT_KEYS)}


def lookup(table: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
    """Rows `index` (B,) int64 of a caption table, on the index's device."""
    cpu = index.cpu()
    return {key: table[key][cpu].to(index.device) for key in TEXT_KEYS}


def caption_table(run: RunDir, data: ImageData, what: str) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """The text conditioning of the data's training captions, once per distinct caption.

    The captions the run's CLIP held out (its heldout_fraction, by hash) are held out here too, so that a
    prompt unseen by the CLIP is unseen by the prior and the decoder.

    Returns:
        (table {key: (M, ...)} on the CPU, caption index (N,) int64 into it (-1 for held-out images),
        keep (N,) bool: the images trained on).
    """
    if data.captions is None:
        raise VcdmError(f"{what} trains on (image, caption) pairs, and {data.source} has no captions "
                        "(data.source=emoji has)")  # fmt: skip
    meta = require_clip(run, what)
    keep = ~heldout_mask(data.captions, float(meta["heldout_fraction"]))
    if not bool(keep.any()):
        raise VcdmError(f"{data.source}: every caption is held out by the run's CLIP")
    ids, texts = caption_ids([c for c, k in zip(data.captions, keep.tolist()) if k])
    encoder = TextEncoder.from_run(run.path)
    table = {k: v.cpu() for k, v in encoder.encode(texts).items()}
    index = torch.full((len(data),), -1, dtype=torch.int64)
    index[keep] = ids
    return table, index, keep
