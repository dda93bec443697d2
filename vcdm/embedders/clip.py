"""CLIP embedder: a Hugging Face `CLIPModel` loaded from a local directory; never downloads anything."""

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vcdm.errors import VcdmError

# Radford et al. 2021: the normalisation the OpenAI CLIP models were trained with.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
_SAVED_WITH = "a local directory saved with `CLIPModel.save_pretrained`"


@contextlib.contextmanager
def _offline_env() -> Iterator[None]:
    """Set the Hugging Face offline switches for the duration of a load, then restore them."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict.fromkeys(keys, "1"))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise VcdmError("the CLIP embedder needs transformers: pip install 'vcdm[clip]'") from e
    return transformers


def _read_normalization(path: Path) -> tuple[Tensor, Tensor]:
    """CLIP mean/std from the saved image-processor config, else the OpenAI values; each (1, 3, 1, 1)."""
    mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    config_file = path / "preprocessor_config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as e:
            raise VcdmError(f"{config_file}: not a valid JSON image-processor config ({e})") from e
        mean, std = config.get("image_mean", mean), config.get("image_std", std)
        if not (
            isinstance(mean, list | tuple)
            and isinstance(std, list | tuple)
            and len(mean) == len(std) == 3
            and all(s > 0 for s in std)
        ):
            raise VcdmError(f"{config_file}: expected image_mean and image_std to be 3 numbers (std > 0)")
    return torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)


def _features(output: Any) -> Tensor:
    # transformers < 5 returns the projected features; 5 returns an output whose pooler_output holds them.
    return output if isinstance(output, Tensor) else output.pooler_output


class ClipEmbedder:
    """`Embedder` around a Hugging Face CLIP model: L2-normalised image and text features of size `dim`."""

    def __init__(self, model: Any, tokenizer: Any | None, mean: Tensor, std: Tensor, device: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer  # None when the directory holds no tokenizer files
        self.device = torch.device(device)
        self.mean, self.std = mean.to(self.device), std.to(self.device)
        self.dim = int(model.config.projection_dim)
        self.image_size = int(model.config.vision_config.image_size)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu") -> "ClipEmbedder":
        """Load a CLIP model (and its tokenizer, when saved) from a local directory, offline.

        Args:
            path: a directory written by `CLIPModel.save_pretrained` (config.json + weights), optionally
                with tokenizer files and a preprocessor_config.json holding image_mean/image_std.
            device: torch device to run the model on.

        Returns:
            The embedder, in eval mode on `device`.
        """
        path = Path(path)
        if not path.is_dir() or not (path / "config.json").is_file():
            raise VcdmError(f"{path}: CLIP model not found; expected {_SAVED_WITH}")
        try:
            model_type = json.loads((path / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError) as e:
            raise VcdmError(f"{path / 'config.json'}: not a valid JSON config; expected {_SAVED_WITH}") from e
        if model_type != "clip":
            raise VcdmError(f"{path}: model_type is {model_type!r}, not 'clip'; expected {_SAVED_WITH}")
        transformers = _import_transformers()
        with _offline_env():
            try:
                model = transformers.CLIPModel.from_pretrained(path, local_files_only=True)
            except Exception as e:  # transformers raises many types for broken or foreign files
                reason = " ".join(str(e).split())
                raise VcdmError(f"{path}: cannot load a CLIP model ({reason}); expected {_SAVED_WITH}") from e
            tokenizer = None
            if any((path / name).is_file() for name in _TOKENIZER_FILES):
                try:
                    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
                except Exception as e:
                    reason = " ".join(str(e).split())
                    raise VcdmError(f"{path}: cannot load the CLIP tokenizer ({reason})") from e
        mean, std = _read_normalization(path)
        return cls(model.to(device), tokenizer, mean, std, device)

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def encode_images(self, x: Tensor) -> Tensor:
        """Embed images without gradients: `image_features` under torch.no_grad()."""
        with torch.no_grad():
            return self.image_features(x)

    def image_features(self, x: Tensor) -> Tensor:
        """Embed images, differentiably (CLIP guidance takes gradients through it).

        Args:
            x: float in [-1, 1], shape (B, C, H, W) with C = 1 (gray) or 3 (RGB), any size.

        Returns:
            L2-normalised image features, float32 (B, dim), on the embedder's device.
        """
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise VcdmError(f"CLIP embedder: expected images (B, 1 or 3, H, W), got {tuple(x.shape)}")
        x = (x.to(self.device, torch.float32) + 1) / 2  # [-1, 1] -> [0, 1]
        x = x.expand(-1, 3, -1, -1)  # gray -> RGB
        # As CLIP's image processor: resize the short side to image_size (bicubic), then centre-crop.
        h, w = x.shape[-2:]
        s = self.image_size
        size = (s, max(s, round(w * s / h))) if h <= w else (max(s, round(h * s / w)), s)
        x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (size[0] - s) // 2, (size[1] - s) // 2
        x = x[:, :, top : top + s, left : left + s]  # (B, 3, s, s)
        x = (x - self.mean) / self.std
        features = _features(self.model.get_image_features(pixel_values=x.to(self._dtype())))
        return F.normalize(features.float(), dim=-1)

    def encode_text(self, texts: list[str]) -> Tensor:
        """Embed texts.

        Args:
            texts: B strings; longer ones are truncated to the text model's context length.

        Returns:
            L2-normalised text features, float32 (B, dim), on the embedder's device.
        """
        if self.tokenizer is None:
            raise VcdmError("this CLIP embedder has no text encoder: its directory holds no tokenizer files")
        max_length = int(self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            features = _features(self.model.get_text_features(**tokens))
        return F.normalize(features.float(), dim=-1)
