"""mAP and MaxRankDist against brute-force definitions; full depth in chunks == ir_measures on the full run."""
from __future__ import annotations

import ir_measures
import numpy as np
import pytest

import mlret_plugin  # noqa: F401  (registers MaxRankDist)
from mlret_plugin.evaluation.measures import FullDepthEvaluator, aggregate, evaluate, parse_measures, per_query


def brute_ranking(docs: dict[str, float]) -> list[str]:
    # trec_eval: score descending, ties by doc_id descending; written out without helpers from the module.
    return sorted(docs, key=lambda d: (-docs[d], [-ord(c) for c in d] + [1]))


def brute_ap(qrels: dict[str, int], docs: dict[str, float]) -> float:
    relevant = {d for d, r in qrels.items() if r > 0}
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, d in enumerate(brute_ranking(docs), start=1):
        if d in relevant:
            hits += 1
            total += hits / i
    return total / len(relevant)


def brute_max_rank_dist(qrels: dict[str, int], docs: dict[str, float]) -> float:
    ranking = brute_ranking(docs)
    ranks = [ranking.index(d) + 1 if d in docs else len(ranking) + 1 for d, r in qrels.items() if r > 0]
    return float(max(ranks) - min(ranks)) if ranks else 0.0


def random_case(seed: int, n_queries=12, n_docs=40, levels=None, with_unjudged_query=True):
    """Random scores (few distinct levels -> many ties), 0-4 relevant docs per query, mixed doc id lengths."""
    rng = np.random.default_rng(seed)
    doc_ids = [f"{rng.choice(['en', 'de', 'zh'])}-a{i % 7}-p{i}-s{i % 3}" for i in range(n_docs)]
    query_ids = [f"{['en', 'de', 'zh'][i % 3]}-q{i}" for i in range(n_queries)]
    scores = rng.standard_normal((n_queries, n_docs)).astype(np.float32)
    if levels:
        scores = np.round(scores * levels) / levels
    qrels = {}
    for i, qid in enumerate(query_ids):
        n_rel = int(rng.integers(0, 5))
        rel = rng.choice(n_docs, size=n_rel, replace=False)
        judged = {doc_ids[j]: 1 for j in rel}
        if n_rel == 0:  # a query with judged documents but no relevant one
            judged[doc_ids[int(rng.integers(n_docs))]] = 0
        qrels[qid] = judged
    if with_unjudged_query:
        qrels["en-qmissing"] = {doc_ids[0]: 1}  # judged, but never in the run
    return query_ids, doc_ids, scores, qrels


def full_run(query_ids, doc_ids, scores):
    return {q: dict(zip(doc_ids, scores[i].tolist())) for i, q in enumerate(query_ids)}


@pytest.mark.parametrize("seed,levels", [(0, None), (1, 2), (2, 1), (3, 4)])
def test_ap_and_max_rank_dist_match_brute_force_on_truncated_runs(seed, levels):
    query_ids, doc_ids, scores, qrels = random_case(seed, levels=levels)
    run = full_run(query_ids, doc_ids, scores)
    # Keep the top 10 only: some relevant documents are never retrieved.
    run = {q: dict(brute_ranking_items(docs)[:10]) for q, docs in run.items()}
    ap, mrd = parse_measures(["AP", "MaxRankDist"])
    values = per_query([ap, mrd], qrels, run)
    assert set(values[ap]) == set(qrels)
    for qid in qrels:
        docs = run.get(qid, {})
        assert values[ap][qid] == pytest.approx(brute_ap(qrels[qid], docs), abs=1e-12)
        if qid in run:
            assert values[mrd][qid] == brute_max_rank_dist(qrels[qid], docs)
        else:
            assert values[mrd][qid] == 0.0  # ir_measures' DEFAULT for a query with nothing retrieved
    assert values[ap]["en-qmissing"] == 0.0


def brute_ranking_items(docs):
    return [(d, docs[d]) for d in brute_ranking(docs)]


def test_brute_force_tie_order_is_trec_evals():
    # trec_eval puts 'b' before 'a' on equal scores, and 'a9' before 'a10' (string order, descending).
    assert ir_measures.calc_aggregate([ir_measures.AP], {"q": {"a": 1}}, {"q": {"a": 1.0, "b": 1.0}})[ir_measures.AP] == 0.5
    assert brute_ap({"a": 1}, {"a": 1.0, "b": 1.0}) == 0.5
    assert brute_ranking({"a10": 1.0, "a9": 1.0}) == ["a9", "a10"]


@pytest.mark.parametrize("seed,levels,chunk", [(0, None, 5), (1, 2, 3), (2, 1, 12), (4, 3, 1)])
def test_full_depth_in_chunks_equals_ir_measures_on_the_full_run(seed, levels, chunk):
    query_ids, doc_ids, scores, qrels = random_case(seed, levels=levels)
    names = ["AP", "R@1", "R@10", "nDCG@10", "RR", "P@5", "MaxRankDist"]
    evaluator = FullDepthEvaluator(names, qrels, doc_ids)
    for start in range(0, len(query_ids), chunk):
        evaluator.add(query_ids[start:start + chunk], scores[start:start + chunk])
    got = evaluator.per_query()
    run = full_run(query_ids, doc_ids, scores)
    expected = per_query(parse_measures(names), qrels, run)
    for measure in got:
        assert got[measure].keys() == expected[measure].keys() == qrels.keys()
        for qid in qrels:
            assert got[measure][qid] == pytest.approx(expected[measure][qid], abs=1e-12), (measure, qid)
    ap, mrd = parse_measures(["AP", "MaxRankDist"])
    for i, qid in enumerate(query_ids):
        assert got[ap][qid] == pytest.approx(brute_ap(qrels[qid], run[qid]), abs=1e-12)
        assert got[mrd][qid] == brute_max_rank_dist(qrels[qid], run[qid])


def test_full_depth_truncation_keeps_less_than_the_full_run():
    doc_ids = [f"d{i}" for i in range(100)]
    scores = np.linspace(1, 0, 100, dtype=np.float32)[None, :].repeat(2, axis=0)
    qrels = {"q0": {"d3": 1}, "q1": {"d50": 1}}
    evaluator = FullDepthEvaluator(["AP", "R@10"], qrels, doc_ids)
    evaluator.add(["q0", "q1"], scores)
    assert evaluator.kept_entries == 10 + 51
    ap = parse_measures(["AP"])[0]
    assert evaluator.per_query()[ap] == {"q0": 0.25, "q1": 1 / 51}


def test_every_judged_query_counts_in_the_mean():
    qrels = {"en-a": {"d1": 1}, "en-b": {"d2": 1}, "de-c": {"d3": 1}, "de-d": {"d1": 0}}
    run = {"en-a": {"d1": 2.0, "d2": 1.0}, "en-b": {"d9": 1.0}, "unjudged": {"d1": 1.0}}
    result = evaluate(["AP", "R@10"], qrels, run)
    assert [round(v, 12) for v in result.values()] == [0.25, 0.25]
    evaluator = FullDepthEvaluator(["AP"], qrels, ["d1", "d2", "d3"])
    evaluator.add(["en-a"], np.array([[2.0, 1.0, 0.0]], dtype=np.float32))
    assert list(evaluator.results().values()) == [0.25]


def test_max_rank_dist_is_macro_averaged_over_query_languages():
    mrd = parse_measures(["MaxRankDist"])[0]
    values = {"en-1": 0.0, "en-2": 0.0, "en-3": 0.0, "de-1": 9.0}
    assert aggregate(mrd, values) == 4.5  # (mean en 0 + mean de 9) / 2, not 9 / 4
    ap = parse_measures(["AP"])[0]
    assert aggregate(ap, values) == 2.25


def test_max_rank_dist_is_registered_with_ir_measures():
    measure = ir_measures.parse_measure("MaxRankDist")
    qrels = {"q": {"a": 1, "b": 1, "c": 1}}
    run = {"q": {"a": 3.0, "x": 2.5, "b": 2.0, "y": 1.0, "c": 0.5}}
    assert ir_measures.calc_aggregate([measure], qrels, run)[measure] == 4.0
    mlret_plugin.evaluation.register_measures()  # idempotent
    assert ir_measures.parse_measure("MaxRankDist") == measure


def test_unknown_measure_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown measure 'MAPP'"):
        parse_measures(["MAPP"])


def test_counting_measures_are_refused_at_full_depth():
    with pytest.raises(ValueError, match="NumRet"):
        FullDepthEvaluator(["NumRet"], {"q": {"d": 1}}, ["d"])
