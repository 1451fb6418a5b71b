"""Finished grid cells, so an interrupted grid restarts where it stopped.

``OUT/cells.jsonl`` holds one JSON line per finished cell: ``{"key", "params", "rows", "info"}``. The key
is a hash of the cell's parameters (canonical JSON: sorted keys, no whitespace), so a cell is reused only
when everything that defines it is equal; changing the model, data, noise seed, ... makes a new cell.
A line is appended with a single ``write`` on an ``O_APPEND`` descriptor and fsynced: a finished cell is
either fully on disk or absent. A process killed in the middle of that write can leave at most one
unterminated last line; it is dropped with a warning on the next start (the cell is then recomputed).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def cell_key(params: dict) -> str:
    """A stable 16-hex-digit key: sha256 of the canonical JSON of ``params``."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


class CellCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._cells: dict[str, dict] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        if tail.strip():  # no final newline: the write of the last cell was interrupted
            log.warning("%s: dropping an unfinished last line (%d bytes); that cell will be recomputed", self.path, len(tail))
            with open(self.path, "r+b") as f:
                f.truncate(len(data) - len(tail))
        for number, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            try:
                cell = json.loads(line)
                key = cell["key"]
                cell["rows"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{self.path}: line {number} is not a finished cell ({e}); delete the file to recompute every cell"
                ) from e
            self._cells[key] = cell

    def __len__(self) -> int:
        return len(self._cells)

    def __contains__(self, params: dict) -> bool:
        return cell_key(params) in self._cells

    def interrupted_note(self, cells: list[dict]) -> str:
        """The report's line for a grid stopped before ``cells`` (its cell parameters) were all finished."""
        finished = sum(params in self for params in cells)
        return (f"**Interrupted: {finished} of {len(cells)} cells finished.** Rerun the same command to "
                "resume.")

    def cells(self) -> list[dict]:
        """Every finished cell, in the order they were written."""
        return list(self._cells.values())

    def get(self, params: dict) -> dict | None:
        """The finished cell (``rows``, ``info``) for these parameters, or None."""
        return self._cells.get(cell_key(params))

    def put(self, params: dict, rows: list[dict], info: dict | None = None) -> dict:
        key = cell_key(params)
        cell = {"key": key, "params": params, "rows": rows, "info": info or {}}
        line = (json.dumps(cell, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            while written < len(line):  # os.write may write less; keep going (still one growing line)
                written += os.write(fd, line[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        self._cells[key] = cell
        return cell
