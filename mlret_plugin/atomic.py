"""Atomic file writes: build the file under a hidden temporary name beside it, then rename it into place.

A reader sees the old file or the whole new one, never half of it; an interrupted write (an exception, a
kill) leaves no file at the target (an exception also removes the temporary file; a killed process may leave
a hidden ``.{name}.*.tmp`` beside it, which nothing reads).

``fsync``: rename alone protects against an interrupted *process*. After a power loss a renamed file can
still be empty unless its data was flushed to disk first, so ``fsync=True`` is for files whose presence
is trusted later without a check of their content:

- the embedding cache entries and the experiment cell log need it (the cache checks a sha256, but a lost
  entry costs an hour of encoding; a cell line is the record that a cell finished);
- the seeded dataset files and a converted model's files need it (they are trusted once present);
- results, reports, runs, figures and per-query files do not (a rerun rewrites them).
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import IO, Iterator


def temporary_name(path: str | Path) -> Path:
    """A hidden, unused name beside ``path`` (``.{name}.{pid}-{random}.tmp``), not created yet: whatever
    writes it creates it with the usual permissions (``tempfile.mkstemp`` would make it private)."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for any writer (matplotlib, PIL, gzip, a copy) to create; on
    success it is renamed to ``path``, on error removed. A writer that does not create it is an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{tmp}: nothing was written for {path}")
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", fsync: bool = False, encoding: str | None = "utf-8") -> Iterator[IO]:
    """``open(path, mode)`` for writing, atomically: ``mode`` is "w" (text) or "wb" (binary)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, "x" if mode == "w" else "xb", encoding=encoding if mode == "w" else None) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", fsync=fsync) as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


__all__ = ["atomic_open", "atomic_path", "atomic_write_bytes", "atomic_write_text", "temporary_name"]
