"""Text for vcdm: tokenizers, text and image towers, and a CLIP trained on a run's (image, caption) pairs.

The `clip` stage kind (vcdm.stages.clip) trains `ClipModel`; nothing here imports vcdm.config (which imports
`vcdm.text.config`) or the stages.
"""

from vcdm.text.clip import ClipModel, ClipTask, info_nce
from vcdm.text.config import ClipStage, ImageTowerConfig, TextTowerConfig
from vcdm.text.retrieval import caption_ids, heldout_mask, is_heldout_caption, recall_at_k
from vcdm.text.tokenizer import TextTokenizer, train_caption_tokenizer
from vcdm.text.towers import ImageTower, MiniLMTextTower, ScratchTextTower, minilm_dir

__all__ = [
    "ClipModel",
    "ClipStage",
    "ClipTask",
    "ImageTower",
    "ImageTowerConfig",
    "MiniLMTextTower",
    "ScratchTextTower",
    "TextTokenizer",
    "TextTowerConfig",
    "caption_ids",
    "heldout_mask",
    "info_nce",
    "is_heldout_caption",
    "minilm_dir",
    "recall_at_k",
    "train_caption_tokenizer",
]
