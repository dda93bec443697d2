"""The caption tokenizer: byte-level BPE trained with `tokenizers`; round trips, determinism, and the checks
every prompt gets (empty, too long: one-line errors)."""

import pytest
import torch

from vcdm.errors import VcdmError
from vcdm.text import TextTokenizer, train_caption_tokenizer

CAPTIONS = ["waving hand sign", "waving hand, medium skin tone", "red heart", "keycap 0", "flag: côte d’ivoire",
            "couple with heart: woman, man", "grinning face", "face with tears of joy"] * 2  # fmt: skip


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer(train_caption_tokenizer(CAPTIONS, vocab_size=300), context_length=32)


def test_round_trip_of_seen_and_unseen_texts(tok):
    texts = [*CAPTIONS[:8], "Blue  heart", "café 😀 x", "  leading and trailing  "]
    ids = tok.encode(texts)
    assert ids.shape == (len(texts), 32) and ids.dtype == torch.int64
    # byte-level: texts with words and characters never seen in training come back (normalised) unchanged
    assert tok.decode(ids) == [tok.normalize(t) for t in texts]
    assert tok.normalize("Blue  heart") == "blue heart"
    # framed by <bos> ... <eos>, then padding (id 0)
    n = int((ids[8] != 0).sum())
    assert ids[8, 0] == 1 and ids[8, n - 1] == 2 and (ids[8, n:] == 0).all()


def test_training_is_deterministic_and_the_json_reloads(tok, tmp_path):
    again = TextTokenizer(train_caption_tokenizer(list(CAPTIONS), vocab_size=300), context_length=32)
    assert again.to_json() == tok.to_json()
    tok.save(tmp_path / "tokenizer.json")
    loaded = TextTokenizer.from_file(tmp_path / "tokenizer.json", context_length=32)
    assert torch.equal(loaded.encode(CAPTIONS), tok.encode(CAPTIONS))


@pytest.mark.parametrize("texts", [[""], ["   "], ["red heart", "\n"]])
def test_an_empty_prompt_is_a_one_line_error(tok, texts):
    with pytest.raises(VcdmError, match="empty prompt") as e:
        tok.encode(texts)
    assert "\n" not in str(e.value).replace(repr("\n"), "")


def test_no_texts_or_a_string_instead_of_a_list_is_refused(tok):
    for bad in ([], "red heart"):
        with pytest.raises(VcdmError, match="non-empty list"):
            tok.encode(bad)


def test_a_prompt_too_long_for_the_context_is_a_one_line_error_naming_the_field(tok):
    long = "grinning face " * 20
    with pytest.raises(
        VcdmError, match=r"tokens; the text tower takes at most 32 \(clip.text.context_length\)"
    ) as e:
        tok.encode(["red heart", long])
    assert "\n" not in str(e.value) and len(str(e.value)) < 160


def test_bad_vocabulary_sizes_and_missing_files(tmp_path):
    with pytest.raises(VcdmError, match="vocab_size must be at least 259"):
        train_caption_tokenizer(CAPTIONS, vocab_size=100)
    with pytest.raises(VcdmError, match="no non-empty captions"):
        train_caption_tokenizer(["", " "], vocab_size=300)
    with pytest.raises(VcdmError, match="missing"):
        TextTokenizer.from_file(tmp_path / "nope.json", 16)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(VcdmError, match="not a tokenizers JSON file"):
        TextTokenizer.from_file(tmp_path / "bad.json", 16)
