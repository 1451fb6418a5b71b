"""Finished grid cells kept outside an output folder, so a grid can grow over several machines.

A grid's output folder holds ``cells.jsonl`` (one line per finished cell) and ``per_query/{key}.jsonl.gz``
(the values its paired tests resample). A grid too long for one machine's lifetime is run a few cells at a
time: ``archive_cells`` copies each finished cell into a folder that outlives the machine (for instance one
under version control), two xz files per cell that never change once written:

- ``{key}.cell.json.xz``: the cell's line of ``cells.jsonl`` (parameters, result rows, timings, machine);
- ``{key}.per_query.jsonl.xz``: its per-query values (xz: 0.47 MB for the 1.1 MB gzip of an XQuAD-R + MLQA-R cell).

``restore_cells`` puts the archived cells back into an output folder that lacks them (per-query file first,
then the cell line, as a grid writes them), so the next command sharing that ``--out`` reuses them and its
report and paired tests cover every seed. A cell's key is the hash of its parameters (model path, data,
recipe, evaluation), so a cell restored on a machine where any of them differs is never mistaken for
the cell that machine would compute.
"""
from __future__ import annotations

import json
import lzma
from pathlib import Path

from mlret_plugin.atomic import atomic_open
from mlret_plugin.evaluation.lareqa import per_query_jsonl, read_per_query, write_per_query
from mlret_plugin.experiments.cache import CellCache, cell_key
from mlret_plugin.experiments.significance import per_query_path

CELL_SUFFIX = ".cell.json.xz"
PER_QUERY_SUFFIX = ".per_query.jsonl.xz"


def archive_cells(out: str | Path, archive: str | Path) -> list[str]:
    """Copy every finished cell of the grid folder ``out`` that ``archive`` lacks; returns their keys."""
    out, archive = Path(out), Path(archive)
    cells_path = out / "cells.jsonl"
    if not cells_path.is_file():
        raise FileNotFoundError(f"{cells_path}: no finished cells to archive (expected a grid's --out folder)")
    added = []
    for cell in CellCache(cells_path).cells():
        key = cell["key"]
        if (archive / f"{key}{CELL_SUFFIX}").is_file():
            continue
        records = read_per_query(per_query_path(out, key))  # names the missing file
        with atomic_open(archive / f"{key}{PER_QUERY_SUFFIX}", "wb") as f:
            f.write(lzma.compress(per_query_jsonl(records), preset=9))
        with atomic_open(archive / f"{key}{CELL_SUFFIX}", "wb") as f:  # last: a cell file means both are whole
            f.write(lzma.compress(json.dumps(cell, ensure_ascii=False, default=str).encode("utf-8"), preset=9))
        added.append(key)
    return added


def _read_xz_json(path: Path, lines: bool):
    try:
        text = lzma.decompress(path.read_bytes()).decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()] if lines else json.loads(text)
    except (lzma.LZMAError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not an archived cell file ({e}); delete it and archive the cell again") from e


def restore_cells(archive: str | Path, out: str | Path) -> list[str]:
    """Add every archived cell that the grid folder ``out`` lacks; returns their keys."""
    archive, out = Path(archive), Path(out)
    if not archive.is_dir():
        raise FileNotFoundError(f"{archive}: no such archive folder (expected one written by archive_cells)")
    cache = CellCache(out / "cells.jsonl")
    added = []
    for path in sorted(archive.glob(f"*{CELL_SUFFIX}")):
        cell = _read_xz_json(path, lines=False)
        key = path.name[:-len(CELL_SUFFIX)]
        if not isinstance(cell, dict) or "params" not in cell or "rows" not in cell:
            raise ValueError(f"{path}: expected a cell with 'params' and 'rows'")
        if cell.get("key") != key or cell_key(cell["params"]) != key:
            raise ValueError(f"{path}: its key does not match its parameters (edited or damaged); delete it")
        if cache.get(cell["params"]) is not None:
            continue
        per_query = archive / f"{key}{PER_QUERY_SUFFIX}"
        if not per_query.is_file():
            raise FileNotFoundError(f"{per_query}: the per-query values of {path.name} are missing")
        write_per_query(_read_xz_json(per_query, lines=True), per_query_path(out, key))
        cache.put(cell["params"], cell["rows"], cell.get("info"))
        added.append(key)
    return added
