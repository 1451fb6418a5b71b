"""Seeds and paired tests for the grids' reports.

A grid *point* is one coordinate of a grid (attention: variant, noise, distractors, pool; ratio: model,
alpha, evaluation) with one finished cell per training seed. ``summarize`` turns points into result rows:
- every row's ``value`` is the mean over the point's seeds, with ``std`` (sample std; 0 for one seed),
  ``seeds`` and ``n_seeds``;
- the summary rows of ``TESTED`` (setting, measure) pairs of a point with a baseline get a paired test
  against it (``evaluation.stats``: sign-flip randomisation test over questions, 95% bootstrap CI of the
  mean difference; per-query values averaged over the seeds both points share first), and Holm's
  adjustment across every test of the report (one table; enough resamples that the smallest attainable p
  stays far below Holm's first threshold, ``resamples_for``): ``p_value``, ``p_holm``, ``ci_low``,
  ``ci_high``, ``n_queries``, ``n_units``, ``baseline``. Rows without a test carry None there.
- ``contrasts`` name extra pairs of points to test against each other directly (attention: block-sparse vs
  local at the same coordinates); each gives *contrast rows* (``breakdown`` "contrast", ``value`` = the
  difference of the two means, ``baseline`` = the other point) in the same Holm family.

Per-query values live next to the cell cache: ``OUT/per_query/{cell key}.jsonl.gz`` (AP and MaxRankDist
only), written atomically before the cell enters ``cells.jsonl``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from mlret_plugin.evaluation.lareqa import read_per_query, write_per_query
from mlret_plugin.evaluation.paired import (TEST_FIELDS, TESTED, adjust_holm, mark, method_note, record_test,
                                            resamples_for, tests_table)
from mlret_plugin.evaluation.stats import N_RESAMPLES, compare, mean_over_seeds, weighted_values

log = logging.getLogger(__name__)

STAT_MEASURES = ("AP", "MaxRankDist")
_ROW_KEY = ("eval", "dataset", "system", "measure", "setting", "breakdown", "qlang", "dlang")


def per_query_path(out: Path, key: str) -> Path:
    return Path(out) / "per_query" / f"{key}.jsonl.gz"


def save_per_query(out: Path, key: str, records: Iterable[dict]) -> Path:
    return write_per_query([r for r in records if r["measure"] in STAT_MEASURES], per_query_path(out, key))


@dataclass
class Point:
    coord: tuple
    label: str  # how tables name it (the baseline column of the tests)
    cells: dict  # training seed (None: untrained / zero-shot) -> finished cell
    baseline: tuple | None = None


def _mean_rows(point: Point) -> list[dict]:
    seeds = sorted(point.cells, key=lambda s: (s is not None, s if s is not None else -1))
    grouped: dict[tuple, list[dict]] = {}
    for seed in seeds:
        for row in point.cells[seed]["rows"]:
            grouped.setdefault(tuple(row.get(k) for k in _ROW_KEY), []).append(row)
    out = []
    for rows in grouped.values():
        values = [r["value"] for r in rows]
        row = {**rows[0], "value": float(np.mean(values)),
               "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
               "seeds": [s for s in seeds if s is not None], "n_seeds": len(rows)}
        out.append({**row, **{k: None for k in TEST_FIELDS}})
    return out


class _PerQuery:
    """Loads each cell's per-query file once."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self._loaded: dict[str, list[dict]] = {}

    def records(self, cell: dict, eval_name: str | None) -> list[dict]:
        key = cell["key"]
        if key not in self._loaded:
            self._loaded[key] = read_per_query(per_query_path(self.out, key))
        return [r for r in self._loaded[key] if r.get("eval") == eval_name]


def _paired_seeds(point: Point, base: Point) -> tuple[list, list]:
    """Seeds of the point and of its baseline that enter a test: the seeds both have, or all of them when
    one side has no seed (untrained / zero-shot: one cell, whatever the seeds)."""
    if list(point.cells) == [None] or list(base.cells) == [None]:
        return list(point.cells), list(base.cells)
    shared = [s for s in point.cells if s in base.cells]
    return shared, shared


def _contrast_rows(rows: list[dict], other_rows: list[dict], other_label: str) -> list[dict]:
    """One row per tested summary row of a point that the other point also has: the difference of means."""
    other = {(r.get("eval"), r["setting"], r["measure"]): r for r in other_rows if r["breakdown"] == "summary"}
    out = []
    for r in rows:
        o = other.get((r.get("eval"), r["setting"], r["measure"]))
        if r["breakdown"] == "summary" and (r["setting"], r["measure"]) in TESTED and o is not None:
            out.append({**r, "breakdown": "contrast", "value": r["value"] - o["value"], "std": None,
                        "contrast": other_label})
    return out


def summarize(points: list[Point], out: Path, evals: Iterable[str | None] = (None,),
              n_resamples: int = N_RESAMPLES, contrasts: Iterable[tuple[tuple, tuple]] = ()) -> list[dict]:
    """Seed-averaged rows of every point, with the paired tests against each point's baseline, then the
    contrast rows of ``contrasts`` ((point coord, other coord) pairs whose points both exist)."""
    by_coord = {p.coord: p for p in points}
    rows_of = {p.coord: _mean_rows(p) for p in points}
    per_query = _PerQuery(out)
    # (point, its reference, the rows that receive the tests)
    pairs: list[tuple[Point, Point | None, list[dict]]] = []
    for point in points:
        base = by_coord.get(point.baseline) if point.baseline is not None else None
        if point.baseline is not None and base is not point:
            pairs.append((point, base, rows_of[point.coord]))
    contrast_rows: list[dict] = []
    for coord, other in contrasts:
        point, base = by_coord.get(coord), by_coord.get(other)
        if point is not None and base is not None:
            rows = _contrast_rows(rows_of[coord], rows_of[other], base.label)
            contrast_rows += rows
            pairs.append((point, base, rows))
    planned: list[tuple[dict, Point, Point, list, list, str | None, str, str]] = []
    for point, base, rows in pairs:
        seeds, base_seeds = _paired_seeds(point, base) if base is not None else ([], [])
        if not seeds:
            log.warning("%s %s: no test, its baseline %s has no finished cell%s yet; run the part that computes "
                        "it (same --out)", point.label, point.coord, base.label if base else point.baseline,
                        "" if base is None else f" for seeds {sorted(s for s in point.cells if s is not None)}")
            continue
        summary = {(r.get("eval"), r["setting"], r["measure"]): r for r in rows
                   if r["breakdown"] in ("summary", "contrast")}
        for eval_name in evals:
            for setting, measure in TESTED:
                row = summary.get((eval_name, setting, measure))
                if row is not None:
                    planned.append((row, point, base, seeds, base_seeds, eval_name, setting, measure))
    resamples = resamples_for(len(planned), n_resamples)
    tested: list[dict] = []
    for row, point, base, seeds, base_seeds, eval_name, setting, measure in planned:
        system = mean_over_seeds([weighted_values(per_query.records(point.cells[s], eval_name), setting, measure)
                                  for s in seeds])
        reference = mean_over_seeds([weighted_values(per_query.records(base.cells[s], eval_name), setting, measure)
                                     for s in base_seeds])
        if not system:
            continue
        record_test(row, compare(system, reference, n_resamples=resamples), base.label, resamples)
        if len(seeds) != len(point.cells) or len(base_seeds) != len(base.cells):
            row["test_seeds"] = [s for s in seeds if s is not None]
        tested.append(row)
    adjust_holm(tested)
    return [r for p in points for r in rows_of[p.coord]] + contrast_rows


__all__ = ["Point", "STAT_MEASURES", "TESTED", "TEST_FIELDS", "mark", "method_note", "per_query_path", "resamples_for",
           "save_per_query", "summarize", "tests_table"]
