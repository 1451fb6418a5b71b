"""Archived grid cells: a folder restored from an archive holds the same cells and per-query values."""
import lzma

import pytest

from mlret_plugin.evaluation.lareqa import read_per_query
from mlret_plugin.experiments.archive import CELL_SUFFIX, PER_QUERY_SUFFIX, archive_cells, restore_cells
from mlret_plugin.experiments.cache import CellCache, cell_key
from mlret_plugin.experiments.significance import per_query_path, save_per_query


def _finish(out, seed: int, ap: float) -> str:
    """A finished cell as a grid writes it: per-query values first, then the cell line."""
    params = {"experiment": "ratio", "alpha": 0.5, "seed": seed}
    records = [{"setting": "mono", "measure": "AP", "dataset": "xquad-r/de", "values": {"q1": ap, "q2": 1.0}},
               {"setting": "mono", "measure": "R@1", "dataset": "xquad-r/de", "values": {"q1": 0.0}}]
    cache = CellCache(out / "cells.jsonl")
    save_per_query(out, cell_key(params), records)
    return cache.put(params, [{"setting": "mono", "measure": "AP", "value": ap}], {"train_seconds": seed})["key"]


def test_restore_gives_back_every_cell_and_its_per_query_values(tmp_path):
    out, archive, fresh = tmp_path / "out", tmp_path / "archive", tmp_path / "fresh"
    keys = [_finish(out, 0, 0.25), _finish(out, 1, 0.75)]
    assert sorted(archive_cells(out, archive)) == sorted(keys)
    assert sorted(restore_cells(archive, fresh)) == sorted(keys)
    restored = {c["key"]: c for c in CellCache(fresh / "cells.jsonl").cells()}
    for cell in CellCache(out / "cells.jsonl").cells():
        assert restored[cell["key"]] == cell
        assert read_per_query(per_query_path(fresh, cell["key"])) == read_per_query(per_query_path(out, cell["key"]))


def test_archive_and_restore_add_only_what_is_missing(tmp_path):
    out, archive = tmp_path / "out", tmp_path / "archive"
    first = _finish(out, 0, 0.25)
    assert archive_cells(out, archive) == [first]
    second = _finish(out, 1, 0.5)
    assert archive_cells(out, archive) == [second]  # the first cell's files are written once
    assert restore_cells(archive, out) == []  # out has both already
    partial = tmp_path / "partial"
    _finish(partial, 0, 0.25)
    assert restore_cells(archive, partial) == [second]
    assert len(CellCache(partial / "cells.jsonl")) == 2


def test_damaged_or_incomplete_archives_fail_with_the_file_named(tmp_path):
    out, archive = tmp_path / "out", tmp_path / "archive"
    key = _finish(out, 0, 0.25)
    archive_cells(out, archive)
    (archive / f"{key}{PER_QUERY_SUFFIX}").unlink()
    with pytest.raises(FileNotFoundError, match="per-query values"):
        restore_cells(archive, tmp_path / "a")
    cell_file = archive / f"{key}{CELL_SUFFIX}"
    text = lzma.decompress(cell_file.read_bytes()).decode().replace('"seed": 0', '"seed": 7')
    cell_file.write_bytes(lzma.compress(text.encode()))
    with pytest.raises(ValueError, match="does not match its parameters"):
        restore_cells(archive, tmp_path / "b")
    cell_file.write_bytes(b"not xz")
    with pytest.raises(ValueError, match=cell_file.name):
        restore_cells(archive, tmp_path / "c")


def test_archiving_a_cell_without_per_query_values_names_the_missing_file(tmp_path):
    out = tmp_path / "out"
    key = _finish(out, 0, 0.25)
    per_query_path(out, key).unlink()
    with pytest.raises(FileNotFoundError, match=key):
        archive_cells(out, tmp_path / "archive")
    assert not (tmp_path / "archive" / f"{key}{CELL_SUFFIX}").exists()
