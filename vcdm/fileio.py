"""Atomic file writes: every file vcdm writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from vcdm.errors import VcdmError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync it, then rename it over `path` (POSIX-atomic).

    A crash at any moment leaves either the old file or the new one, never a half-written file.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 (minus umask) gives the permissions a plain open() would; mkstemp's are 0600.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise VcdmError(
                f"{path}: cannot write ({e.strerror or e}); the previous file, if any, is intact"
            ) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable (POSIX); not possible on every platform/filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def cache_dir() -> Path:
    """vcdm's user cache: $VCDM_CACHE_DIR, else $XDG_CACHE_HOME/vcdm, else ~/.cache/vcdm."""
    if os.environ.get("VCDM_CACHE_DIR"):
        return Path(os.environ["VCDM_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vcdm"
