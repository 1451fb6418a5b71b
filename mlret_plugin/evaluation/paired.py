"""Paired tests in reports: which summaries are tested, how many resamples, and how the tests are shown.

``test_systems`` compares every system of one LAReQA evaluation with a baseline system (``mlret lareqa``:
the first one, BM25 with ``--bm25``) on the same queries, with ``evaluation.stats`` (sign-flip
randomisation test over source questions, bootstrap CI, Holm across the report's tests). The experiment
reports (``experiments.significance``) use the same tested settings, resample rule and tables.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from mlret_plugin.tables import markdown_table
from mlret_plugin.evaluation.stats import ALPHA, N_RESAMPLES, Comparison, compare, holm, weighted_values

TESTED = (("mono", "AP"), ("cross", "AP"), ("multi", "AP"), ("multi", "MaxRankDist"))
TEST_FIELDS = ("p_value", "p_holm", "ci_low", "ci_high", "n_queries", "n_units", "baseline")


def resamples_for(n_tests: int, minimum: int = N_RESAMPLES) -> int:
    """Enough resamples that the smallest attainable p-value (about 2 / resamples, two-sided) stays far below
    what Holm needs for the first of ``n_tests`` tests (ALPHA / n_tests): at least 40 x n_tests / ALPHA."""
    return max(minimum, int(np.ceil(40 * n_tests / ALPHA)))


def record_test(row: dict, comparison: Comparison, baseline: str, n_resamples: int) -> dict:
    """Put a paired comparison's result on the summary row it tests (``TEST_FIELDS`` but ``p_holm``,
    ``test_delta``, ``n_resamples``)."""
    row.update({"p_value": comparison.p_value, "ci_low": comparison.ci_low, "ci_high": comparison.ci_high,
                "n_queries": comparison.n_queries, "n_units": comparison.n_units, "baseline": baseline,
                "test_delta": comparison.delta, "n_resamples": n_resamples})
    return row


def adjust_holm(tested: list[dict]) -> None:
    """Holm's correction across the tested rows of one report: sets each row's ``p_holm``."""
    for row, adjusted in zip(tested, holm([r["p_value"] for r in tested])):
        row["p_holm"] = adjusted


def test_systems(rows: list[dict], records: Iterable[dict], baseline: str,
                 n_resamples: int = N_RESAMPLES) -> list[dict]:
    """Give the ``TESTED`` summary rows of every system but ``baseline`` its paired test against ``baseline``
    (fields ``TEST_FIELDS``, ``test_delta``, ``n_resamples``; Holm across all of them). ``records``: the
    ``run_lareqa(per_query_sink=...)`` records of the same evaluation. Returns the tested rows."""
    systems = list(dict.fromkeys(r["system"] for r in rows))
    if baseline not in systems:
        raise ValueError(f"baseline system {baseline!r} is not among the evaluated systems {systems}")
    by_system: dict[str, list[dict]] = {}
    for record in records:
        by_system.setdefault(record["system"], []).append(record)
    summary = {(r["system"], r["setting"], r["measure"]): r for r in rows if r["breakdown"] == "summary"}
    planned = [(summary[(s, setting, measure)], setting, measure) for s in systems if s != baseline
               for setting, measure in TESTED if (s, setting, measure) in summary
               and (baseline, setting, measure) in summary]
    resamples = resamples_for(len(planned), n_resamples)
    reference = {test: weighted_values(by_system.get(baseline, []), *test) for test in TESTED}
    tested = []
    for row, setting, measure in planned:
        system_values = weighted_values(by_system.get(row["system"], []), setting, measure)
        if system_values and reference[(setting, measure)]:
            comparison = compare(system_values, reference[(setting, measure)], n_resamples=resamples)
            tested.append(record_test(row, comparison, baseline, resamples))
    adjust_holm(tested)
    return tested


def mark(row: dict | None) -> str:
    """``*`` when the Holm-adjusted p-value is below ALPHA."""
    return "*" if row and row.get("p_holm") is not None and row["p_holm"] < ALPHA else ""


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def tests_table(rows: list[dict], name_of: Callable[[dict], str]) -> str:
    """Every test of a report: Δ with its 95% CI, p, Holm p, queries / units (and the evaluation and seeds
    columns where any row has them)."""
    tested = [r for r in rows if r.get("p_value") is not None]
    if not tested:
        return "No paired tests (no point has its baseline among the finished cells)."
    first = {name: i for i, name in reversed(list(enumerate(name_of(r) for r in tested)))}
    tested.sort(key=lambda r: (first[name_of(r)], str(r.get("eval")), TESTED.index((r["setting"], r["measure"]))))
    with_eval = any(r.get("eval") for r in tested)
    with_seeds = any("seeds" in r for r in tested)
    header = ["comparison"] + (["eval"] if with_eval else []) + ["setting", "measure", "Δ", "95% CI", "p", "p (Holm)",
                                                                "queries / questions"] + (["seeds"] if with_seeds else [])
    body = []
    for r in tested:
        digits = 1 if r["measure"] == "MaxRankDist" else 4
        cells = [f"{name_of(r)} vs {r['baseline']}"] + ([r.get("eval") or "-"] if with_eval else []) + [
            r["setting"], r["measure"], f"{r['test_delta']:+.{digits}f}{mark(r)}",
            f"[{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]", _p(r["p_value"]), _p(r["p_holm"]),
            f"{r['n_queries']} / {r['n_units']}"]
        if with_seeds:
            cells.append(",".join(map(str, r.get("test_seeds", r.get("seeds")) or ["-"])))
        body.append(cells)
    return markdown_table(header, body)


def method_note(n_tests: int, seeds: bool = True) -> str:
    if n_tests == 0:
        # a report of baselines only (e.g. untrained cells): nothing was compared, so no method to describe
        return "No paired tests yet: every comparison needs its baseline and variant cells on the same queries."
    return (f"Tests: paired randomisation (sign-flip) test over source questions ({resamples_for(n_tests)} resamples, "
            "scipy.stats.permutation_test, two-sided; each question's translations and target languages form one "
            "unit, weighted as in the reported mean), 95% percentile bootstrap CI of the mean difference "
            f"(scipy.stats.bootstrap, paired), Holm correction across the {n_tests} tests of this report; "
            f"`*` = Holm-adjusted p < {ALPHA:g}."
            + (" With several seeds, each query's value is averaged over the seeds before the test; the ± is the "
               "std across seeds." if seeds else ""))


def tests_section(rows: list[dict], name_of: Callable[[dict], str]) -> str:
    """The method note, then a "## Paired tests" table when anything was tested (else the note alone)."""
    n_tests = sum(r.get("p_value") is not None for r in rows)
    note = method_note(n_tests)
    return f"{note}\n\n## Paired tests\n\n{tests_table(rows, name_of)}" if n_tests else note


__all__ = ["TESTED", "TEST_FIELDS", "adjust_holm", "mark", "method_note", "record_test", "resamples_for",
           "test_systems", "tests_section", "tests_table"]
