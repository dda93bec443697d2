"""Prompts from the command line and from files, checked before any model runs.

A prompts file holds one prompt a line (UTF-8); blank lines and lines starting with "#" are skipped. An empty
prompt is a one-line VcdmError here; one too long for the text tower is refused by the tokenizer
(vcdm.text.tokenizer.TextTokenizer.encode) when the pipeline encodes it, before sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vcdm.errors import VcdmError
from vcdm.text.tokenizer import canonical_text


def read_prompts_file(path: str | Path) -> list[str]:
    """The prompts of a file: one a line, blank lines and "#" comments skipped; at least one."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise VcdmError(f"{path}: prompts file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise VcdmError(f"{path}: cannot read it as UTF-8 text ({type(e).__name__})") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise VcdmError(f"{path}: holds no prompts (one a line; blank lines and # comments are skipped)")
    return prompts


def gather_prompts(prompts: Sequence[str] | None, file: str | Path | None) -> list[str]:
    """The prompts of --prompt (in order) then of --prompts-file; [] when neither is given.

    Raises:
        VcdmError: an empty prompt (one line, naming it), or a file that is missing or holds none.
    """
    out = list(prompts or []) + (read_prompts_file(file) if file is not None else [])
    for p in out:
        if not canonical_text(p):
            raise VcdmError(f"empty prompt {p!r}: give the text to draw")
    return out
