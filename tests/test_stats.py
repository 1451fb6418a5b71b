"""Paired randomisation test, bootstrap CI, Holm, and the summary weights of per-query values (evaluation.stats)."""
from __future__ import annotations

import numpy as np
import pytest

from mlret_plugin.evaluation.measures import aggregate, parse_measures
from mlret_plugin.evaluation.stats import (
    bootstrap_ci,
    compare,
    holm,
    mean_over_seeds,
    randomisation_p_value,
    unit_differences,
    weighted_values,
)


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06; back in input order
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # one test: unchanged
    assert holm([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


def test_sign_flip_test_is_exact_on_few_units():
    # 3 units, all positive: of the 8 sign patterns only all-plus and all-minus reach |sum| >= 6 -> p = 2/8
    assert randomisation_p_value(np.array([1.0, 2.0, 3.0])) == pytest.approx(0.25)
    assert randomisation_p_value(np.zeros(5)) == 1.0  # identical systems


def test_known_significant_and_known_null_differences():
    rng = np.random.default_rng(0)
    n = 400
    shift = 0.05 + rng.normal(0, 0.05, n)  # a clear improvement on almost every unit
    null = rng.normal(0, 0.05, n)
    null -= null.mean()  # mean difference exactly 0
    weights = np.full(n, 1 / n)
    assert randomisation_p_value(shift * weights) < 0.001
    low, high = bootstrap_ci(shift * weights, weights)
    assert 0 < low < shift.mean() < high  # CI excludes 0 and contains the mean difference
    assert randomisation_p_value(null * weights, seed=1) > 0.5
    low, high = bootstrap_ci(null * weights, weights)
    assert low < 0 < high  # CI contains 0
    # the same seed gives the same answer
    assert randomisation_p_value(null * weights, seed=1) == randomisation_p_value(null * weights, seed=1)


def _records(setting, measure, subsets):
    return [{"system": "s", "setting": setting, "dataset": name, "measure": measure, "values": values}
            for name, values in subsets.items()]


def test_weights_reproduce_the_reported_summaries():
    # mono: two languages with different query counts; the summary is the mean of the two means
    mono = {"x[en]": {"en-1": 1.0, "en-2": 0.0, "en-3": 0.5}, "x[de]": {"de-1": 0.2}}
    values = weighted_values(_records("mono", "AP", mono), "mono", "AP")
    assert sum(w * v for w, v in values.values()) == pytest.approx((0.5 + 0.2) / 2)
    assert sum(w for w, _ in values.values()) == pytest.approx(1.0)
    # MaxRankDist: mean per query language, then over languages (measures.aggregate)
    pool = {"x[de,en]": {"en-1": 10.0, "en-2": 30.0, "de-1": 4.0}}
    values = weighted_values(_records("multi", "MaxRankDist", pool), "multi", "MaxRankDist")
    expected = aggregate(parse_measures(["MaxRankDist"])[0], pool["x[de,en]"])
    assert sum(w * v for w, v in values.values()) == pytest.approx(expected) == pytest.approx((20 + 4) / 2)
    assert weighted_values(_records("mono", "AP", mono), "cross", "AP") == {}


def test_units_are_questions_and_the_statistic_is_the_summary_difference():
    # cross: en->de and de->en; question 1 appears in both pairs, so both its queries form one unit
    base = {"x[en->de]": {"en-1": 0.5, "en-2": 0.5}, "x[de->en]": {"de-1": 0.5, "de-2": 0.5}}
    system = {"x[en->de]": {"en-1": 1.0, "en-2": 0.5}, "x[de->en]": {"de-1": 0.9, "de-2": 0.3}}
    a = weighted_values(_records("cross", "AP", system), "cross", "AP")
    b = weighted_values(_records("cross", "AP", base), "cross", "AP")
    diffs, weights, n_queries = unit_differences(a, b)
    assert len(diffs) == 2 and n_queries == 4  # questions 1 and 2; queries en-1, en-2, de-1, de-2
    assert diffs.sum() == pytest.approx((0.75 - 0.5 + 0.6 - 0.5) / 2)
    assert weights.sum() == pytest.approx(1.0)
    result = compare(a, b)
    assert result.delta == pytest.approx(diffs.sum()) and result.n_units == 2 and result.n_queries == 4
    assert result.ci_low <= result.delta <= result.ci_high


def test_seeds_are_averaged_per_query_and_must_match():
    s0 = {("d", "en-1"): (0.5, 1.0), ("d", "en-2"): (0.5, 0.0)}
    s1 = {("d", "en-1"): (0.5, 0.0), ("d", "en-2"): (0.5, 0.0)}
    assert mean_over_seeds([s0, s1]) == {("d", "en-1"): (0.5, 0.5), ("d", "en-2"): (0.5, 0.0)}
    with pytest.raises(ValueError, match="same queries"):
        mean_over_seeds([s0, {("d", "en-1"): (1.0, 0.0)}])
    with pytest.raises(ValueError, match="different queries"):
        unit_differences(s0, {("d", "en-1"): (1.0, 0.0)})


def test_resamples_keep_the_smallest_p_far_below_holms_first_threshold():
    from mlret_plugin.evaluation.stats import ALPHA, N_RESAMPLES
    from mlret_plugin.evaluation.paired import resamples_for

    assert resamples_for(1) == N_RESAMPLES
    for m in (4, 40, 200):
        n = resamples_for(m)
        assert m * 2 / (n + 1) <= ALPHA / 10  # the all-units-agree case stays significant after Holm
    rng = np.random.default_rng(0)
    d = np.abs(rng.normal(1, 0.1, 500))  # every unit favours the system
    m = 200
    assert holm([randomisation_p_value(d, n_resamples=resamples_for(m))] * m)[0] < ALPHA


def test_method_note_names_the_test_count_and_says_when_nothing_was_tested():
    from mlret_plugin.evaluation.paired import method_note
    assert "across the 24 tests" in method_note(24)
    empty = method_note(0)
    assert "No paired tests yet" in empty and "Holm" not in empty
