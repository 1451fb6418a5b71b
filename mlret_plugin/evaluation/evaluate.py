"""``mlret evaluate`` as a library call: systems and run files on any dataset ids, measured with ir_measures.

``evaluate_datasets`` gives one row per (dataset, system, measure) with the row fields of the LAReQA table
(``evaluation.lareqa.subset_rows``), and writes each system's TREC run when given a folder. ``check_data``
and ``check_run_queries`` are the checks a command runs before any model loads.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from mlret_plugin.constants import DEFAULT_MEASURES
from mlret_plugin.datasets import Subset, parse_dataset_id
from mlret_plugin.evaluation.lareqa import BREAKDOWN, subset_rows
from mlret_plugin.evaluation.measures import parse_measures, per_query, qrels_dict
from mlret_plugin.evaluation.runs import Run, run_path, write_run

log = logging.getLogger(__name__)


def check_data(subsets: Iterable[Subset]) -> None:
    """Parse the source files of ``subsets`` now, so a missing or corrupt file fails before models load."""
    for subset in subsets:
        for _ in subset.load().qrels_iter():
            break


def check_run_queries(runs: Mapping[str, Run], subset: Subset) -> None:
    """A run must answer the dataset's queries: none in common is an error, foreign ones a warning."""
    judged = set(qrels_dict(subset.load().qrels_iter()))
    for path, run in runs.items():
        common, foreign = judged & set(run), set(run) - judged
        if not common:
            raise ValueError(f"run {path}: none of its {len(run)} query ids (e.g. {sorted(run)[:2]}) is a query of "
                             f"{subset.dataset_id} (e.g. {sorted(judged)[:2]}); was it made for another dataset?")
        if foreign:
            log.warning("run %s: %d of its %d query ids are not queries of %s (ignored), e.g. %s", path,
                        len(foreign), len(run), subset.dataset_id, sorted(foreign)[:2])


def evaluate_datasets(dataset_ids: Sequence[str], systems: Sequence = (), runs: Mapping[str, Run] | None = None,
                      measures: Sequence[str] | None = None, depth: int = 1000,
                      out_dir: str | Path | None = None) -> list[dict]:
    """Rows (dataset, system, measure, value, setting, breakdown, qlang, dlang, queries) for every system's
    top-``depth`` run and every given run ({name: run}, made elsewhere; needs exactly one dataset id)."""
    subsets = [parse_dataset_id(d) for d in dataset_ids]
    parsed = parse_measures(measures or DEFAULT_MEASURES)
    if runs and len(subsets) != 1:
        raise ValueError("run files need exactly one dataset id (a run file holds one dataset's queries)")
    rows = []
    for subset in subsets:
        qrels = qrels_dict(subset.load().qrels_iter())
        found: dict[str, Run] = {}
        for system in systems:
            log.info("[%s] %s", system.name, subset.dataset_id)
            found[system.name] = system.run(subset, depth=depth)
            if out_dir is not None:
                write_run(found[system.name], run_path(out_dir, system.name, subset.dataset_id),
                          tag=system.name.replace(" ", "_"))
        found.update(runs or {})
        for name, run in found.items():
            rows += subset_rows(name, subset, per_query(parsed, qrels, run), BREAKDOWN[subset.setting],
                                by_query_lang=False)
    return rows


__all__ = ["check_data", "check_run_queries", "evaluate_datasets"]
