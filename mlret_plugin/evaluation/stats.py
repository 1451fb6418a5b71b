"""Paired significance of LAReQA comparisons: a randomisation test, a bootstrap CI and Holm's correction.

What is compared: a system (variant, alpha) against its baseline on the same queries. Each per-query
value (``run_lareqa(per_query_sink=...)`` records) gets the weight it has in the reported summary, so the
test statistic is exactly the reported difference of summaries:
- Mono / Cross: the summary is the mean over subsets (languages / ordered pairs) of the mean over their
  queries, so a query of subset s weighs ``1 / (subsets * queries in s)``;
- Multi AP / R@k: mean over the pool's queries (``1 / queries``);
- MaxRankDist: mean per query language, then over languages (``1 / (languages * queries in the language)``).

Unit of the test: the source question (``group_id``; its translations in every language, and in Cross every
target language, form one unit). Translations of one question are strongly correlated, so treating each
(language, query) or (pair, query) as independent would overstate the evidence; clustering by question
keeps the units independent. Each unit's contribution is ``D_g = sum of weight x (system - baseline)``
over its queries, and the observed statistic is ``sum_g D_g`` = the reported Δ.

- Test: paired randomisation (sign-flip) test, ``scipy.stats.permutation_test`` with one sample and
  ``permutation_type="samples"`` (each unit's difference keeps or flips its sign; exact when 2^units <=
  ``n_resamples``), two-sided, seeded.
- CI: 95% percentile bootstrap of the weighted mean difference over units (``scipy.stats.bootstrap``,
  ``paired=True`` so each unit's difference and weight are resampled together), seeded.
- Several seeds: each query's value is first averaged over the seeds (the seeds are repeated
  measurements of one query, not new queries; pooling queries x seeds as independent would inflate n).
- Holm: step-down adjustment across the comparisons of one table (scipy's ``false_discovery_control`` offers
  BH / BY only, so Holm is the few lines of ``holm``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from mlret_plugin.datasets.ids import group_id, lang_of

TEST_NAME = "paired randomisation (sign-flip) test over questions, scipy.stats.permutation_test"
N_RESAMPLES = 5000
ALPHA = 0.05

# A per-query record as run_lareqa's per_query_sink gives it:
# {"system", "setting", "dataset", "measure", "values": {query_id: value}}
Record = Mapping


@dataclass(frozen=True)
class Comparison:
    delta: float  # system - baseline, exactly the difference of the reported summaries
    p_value: float
    ci_low: float
    ci_high: float
    n_queries: int  # distinct query ids entering the comparison
    n_units: int  # independent units of the test (source questions)

    def as_dict(self) -> dict:
        return asdict(self)


def weighted_values(records: Iterable[Record], setting: str, measure: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(subset dataset id, query id) -> (weight in the setting's summary, value), for one setting and measure."""
    chosen = [r for r in records if r["setting"] == setting and r["measure"] == measure]
    if not chosen:
        return {}
    out: dict[tuple[str, str], tuple[float, float]] = {}
    if measure == "MaxRankDist":  # mean per query language, then over languages (measures.aggregate)
        by_lang: dict[str, list[tuple[str, str, float]]] = {}
        for r in chosen:
            for qid, value in r["values"].items():
                by_lang.setdefault(lang_of(qid), []).append((r["dataset"], qid, value))
        for items in by_lang.values():
            for dataset, qid, value in items:
                out[(dataset, qid)] = (1.0 / (len(by_lang) * len(items)), float(value))
        return out
    for r in chosen:  # mean over subsets of the mean over their queries
        n = len(r["values"])
        for qid, value in r["values"].items():
            out[(r["dataset"], qid)] = (1.0 / (len(chosen) * n), float(value))
    return out


def mean_over_seeds(per_seed: Sequence[Mapping[tuple[str, str], tuple[float, float]]]) -> dict:
    """Per-query values averaged over seeds; every seed must have the same queries."""
    if not per_seed:
        raise ValueError("no seeds to average")
    keys = set(per_seed[0])
    for i, values in enumerate(per_seed[1:], start=1):
        if set(values) != keys:
            raise ValueError(f"seed #{i} has {len(values)} queries, seed #0 {len(keys)}: the seeds were not evaluated "
                             "on the same queries")
    return {k: (per_seed[0][k][0], float(np.mean([v[k][1] for v in per_seed]))) for k in keys}


def unit_differences(system: Mapping, baseline: Mapping) -> tuple[np.ndarray, np.ndarray, int]:
    """Per question: (sum of weight x difference, sum of weight), and the number of distinct query ids."""
    if set(system) != set(baseline):
        missing = len(set(baseline) - set(system)) + len(set(system) - set(baseline))
        raise ValueError(f"system and baseline were evaluated on different queries ({missing} not shared): "
                         "a paired comparison needs the same queries")
    diff: dict[str, float] = {}
    weight: dict[str, float] = {}
    for key, (w, value) in system.items():
        g = group_id(key[1])
        diff[g] = diff.get(g, 0.0) + w * (value - baseline[key][1])
        weight[g] = weight.get(g, 0.0) + w
    groups = sorted(diff)
    return (np.array([diff[g] for g in groups]), np.array([weight[g] for g in groups]),
            len({key[1] for key in system}))


def randomisation_p_value(unit_diffs: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value of ``sum(unit_diffs)`` under random sign flips of the units (paired randomisation)."""
    from scipy import stats

    d = np.asarray(unit_diffs, dtype=float)
    if len(d) == 0:
        raise ValueError("no units to test")
    if not np.any(d):
        return 1.0  # identical systems: every sign flip gives the observed statistic
    result = stats.permutation_test(
        (d,), lambda x, axis=-1: np.sum(x, axis=axis), permutation_type="samples", vectorized=True,
        n_resamples=n_resamples, alternative="two-sided", random_state=np.random.default_rng(seed), batch=256,
    )
    return float(result.pvalue)


def bootstrap_ci(unit_diffs: np.ndarray, unit_weights: np.ndarray, confidence: float = 0.95,
                 n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the weighted mean difference ``sum(D) / sum(W)`` over resampled units."""
    from scipy import stats

    d = np.asarray(unit_diffs, dtype=float)
    w = np.asarray(unit_weights, dtype=float)
    if len(d) < 2 or not np.any(d):
        value = float(d.sum() / w.sum()) if len(d) else float("nan")
        return value, value  # no spread to resample
    result = stats.bootstrap(
        (d, w), lambda x, y, axis=-1: np.sum(x, axis=axis) / np.sum(y, axis=axis), paired=True, vectorized=True,
        confidence_level=confidence, n_resamples=n_resamples, method="percentile",
        random_state=np.random.default_rng(seed), batch=256,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare(system: Mapping, baseline: Mapping, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Comparison:
    """Paired test and CI of ``system`` - ``baseline`` (``weighted_values`` / ``mean_over_seeds`` outputs)."""
    d, w, n_queries = unit_differences(system, baseline)
    low, high = bootstrap_ci(d, w, n_resamples=n_resamples, seed=seed)
    return Comparison(delta=float(d.sum()), p_value=randomisation_p_value(d, n_resamples, seed),
                      ci_low=low, ci_high=high, n_queries=n_queries, n_units=len(d))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): sorted ascending, the i-th (0-based) of m
    is multiplied by m - i, made monotone with a running maximum, and capped at 1."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return []
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError(f"p-values must lie in [0, 1]: {p_values}")
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


__all__ = ["ALPHA", "Comparison", "N_RESAMPLES", "TEST_NAME", "bootstrap_ci", "compare", "holm", "mean_over_seeds",
           "randomisation_p_value", "unit_differences", "weighted_values"]
