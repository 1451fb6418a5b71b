"""A content-addressed, on-disk store of embedding matrices.

One entry = the fp32 embeddings of one ordered list of inputs under one encoder fingerprint; its key is
the sha256 of both (``entry_key``). Keying whole input lists, not single texts, is what makes a cached
run equal an uncached one bit for bit: an embedding depends, at float rounding level, on the padded
length of its batch, i.e. on its batch neighbours.

File layout (``ROOT/v1/ab/abcdef....emb``)::

    MAGIC (8 bytes) | format version (uint32 LE) | header length (uint32 LE) | header (UTF-8 JSON)
    | payload: rows x dim float32 little-endian

The header holds the key, shape, dtype, the payload's sha256 and a short description (model name,
what was encoded). A read checks all of it; a file that is truncated, corrupt, of another format
version or filed under the wrong key is reported with a loud warning, deleted and recomputed, never
used. Writes go to a temp file in the same folder, then ``os.replace``: readers see the old file or
the whole new one, and two processes writing the same key both leave a complete file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlret_plugin.atomic import atomic_open

log = logging.getLogger(__name__)

MAGIC = b"MLRETEMB"
FORMAT_VERSION = 1
SUFFIX = ".emb"
ENV_DIR = "MLRET_EMBEDDING_CACHE_DIR"  # cache folder override
ENV_SWITCH = "MLRET_EMBEDDING_CACHE"  # "0" / "off" / "false" disables the cache everywhere
_PREFIX = struct.Struct("<8sII")


class CacheWarning(UserWarning):
    """A cache entry could not be used (corrupt, truncated, other version): it is recomputed."""


def default_cache_dir() -> Path:
    """``$MLRET_EMBEDDING_CACHE_DIR``, else ``ir_datasets.util.home_path() / "mlret" / "embeddings"``."""
    override = os.environ.get(ENV_DIR)
    if override:
        return Path(override).expanduser()
    from ir_datasets.util import home_path

    return home_path() / "mlret" / "embeddings"


def cache_enabled_by_env() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


def entry_key(fingerprint: str, inputs: list) -> str:
    """sha256 over the encoder fingerprint and the ordered inputs (strings or (sentence, context) pairs)."""
    h = hashlib.sha256(fingerprint.encode("utf-8"))
    h.update(len(inputs).to_bytes(8, "little"))
    for item in inputs:
        parts = item if isinstance(item, (tuple, list)) else (item,)
        h.update(len(parts).to_bytes(1, "little"))
        for part in parts:
            data = str(part).encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()


@dataclass(frozen=True)
class CacheStats:
    root: Path
    entries: int
    bytes: int
    by_model: dict  # model name -> (entries, bytes)
    unreadable: int  # files whose header could not be read (would be rebuilt on use)


class EmbeddingCache:
    """Embedding matrices on disk under ``root`` (default: ``default_cache_dir()``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    @property
    def folder(self) -> Path:
        return self.root / f"v{FORMAT_VERSION}"

    def path_for(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}{SUFFIX}"

    # --- read --------------------------------------------------------------------------------------------
    def get(self, key: str) -> torch.Tensor | None:
        """The stored embeddings for ``key``, or None (absent, or unusable: warned about and deleted)."""
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.misses += 1
            return None
        try:
            header, payload = _parse(data, key)
        except ValueError as e:
            warnings.warn(f"embedding cache: {path} is unusable ({e}); deleting it and encoding again. "
                          f"`mlret cache clear` empties the cache.", CacheWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        rows, dim = header["shape"]
        return torch.from_numpy(np.frombuffer(payload, dtype="<f4").reshape(rows, dim).copy())

    # --- write -------------------------------------------------------------------------------------------
    def put(self, key: str, embeddings: torch.Tensor, description: dict | None = None) -> Path:
        """Store a [rows, dim] float32 matrix atomically (temp file in the same folder, then rename)."""
        if embeddings.dim() != 2 or embeddings.dtype != torch.float32:
            raise ValueError(f"the embedding cache stores [rows, dim] float32 matrices; got "
                             f"{tuple(embeddings.shape)} {embeddings.dtype}")
        payload = embeddings.detach().cpu().contiguous().numpy().astype("<f4", copy=False).tobytes()
        header = {"key": key, "shape": list(embeddings.shape), "dtype": "float32-le",
                  "sha256": hashlib.sha256(payload).hexdigest(), "created": time.time(), **(description or {})}
        head = json.dumps(header, ensure_ascii=False, default=str).encode("utf-8")
        path = self.path_for(key)
        with atomic_open(path, "wb", fsync=True) as f:
            f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)))
            f.write(head)
            f.write(payload)
        return path

    # --- maintenance -------------------------------------------------------------------------------------
    def entries(self) -> list[Path]:
        return sorted(self.root.glob(f"v*/??/*{SUFFIX}")) if self.root.is_dir() else []

    def stats(self) -> CacheStats:
        """Entries and bytes per model (from the headers only; payloads are not read)."""
        by_model: dict[str, list[int]] = {}
        total = unreadable = 0
        files = self.entries()
        for path in files:
            size = path.stat().st_size
            total += size
            model = read_header(path).get("model", "?") if _header_ok(path) else None
            if model is None:
                unreadable += 1
                model = "(unreadable: rebuilt on use)"
            slot = by_model.setdefault(model, [0, 0])
            slot[0] += 1
            slot[1] += size
        return CacheStats(self.root, len(files), total, {m: tuple(v) for m, v in sorted(by_model.items())}, unreadable)

    def clear(self) -> tuple[int, int]:
        """Delete every entry and leftover temp file under the root; returns (files, bytes) removed."""
        files = removed = 0
        if not self.root.is_dir():
            return 0, 0
        for path in list(self.root.glob(f"v*/??/*{SUFFIX}")) + list(self.root.glob("v*/??/.*.tmp")):
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            files += 1
            removed += size
        for folder in sorted(self.root.glob("v*/??"), reverse=True) + sorted(self.root.glob("v*")):
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty (someone is writing) or already gone
        return files, removed


def _parse(data: bytes, key: str) -> tuple[dict, bytes]:
    if len(data) < _PREFIX.size:
        raise ValueError(f"truncated: {len(data)} bytes, shorter than the {_PREFIX.size}-byte prefix")
    magic, version, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not an mlret embedding file (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise ValueError(f"format version {version}, this mlret-plugin reads version {FORMAT_VERSION}")
    start = _PREFIX.size + head_len
    if len(data) < start:
        raise ValueError("truncated inside the header")
    try:
        header = json.loads(data[_PREFIX.size:start].decode("utf-8"))
        rows, dim = (int(x) for x in header["shape"])
        digest = header["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"bad header ({e})") from e
    if header.get("key") != key:
        raise ValueError(f"filed under {key[:12]}... but its header says {str(header.get('key'))[:12]}...")
    payload = data[start:]
    if len(payload) != rows * dim * 4:
        raise ValueError(f"truncated: payload {len(payload)} bytes, expected {rows} x {dim} x 4 = {rows * dim * 4}")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise ValueError("checksum mismatch (payload sha256 differs from the header's)")
    return header, payload


def read_header(path: Path) -> dict:
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        magic, version, head_len = _PREFIX.unpack(prefix)
        return {"format_version": version, **json.loads(f.read(head_len).decode("utf-8"))}


def _header_ok(path: Path) -> bool:
    try:
        header = read_header(path)
    except (OSError, ValueError, struct.error):
        return False
    return header.get("format_version") == FORMAT_VERSION and "model" in header
