"""Measures through ir_measures: per-query values over every judged query, MaxRankDist, full-depth evaluation.

Conventions (those of trec_eval, which ir_measures uses for AP / nDCG / R / RR):
- a ranking sorts by score descending, ties by doc_id descending (string order);
- every query of the qrels counts in a mean; a query with nothing retrieved counts ``measure.DEFAULT`` (0).

Full depth without a 13k x 13k run: scores are consumed in query chunks and each query keeps every
document scoring at least as high as its lowest-scored judged document (ties included), plus its top
``max cutoff`` documents. Measures that depend only on the positions of judged documents within the
ranking (AP, nDCG, R, RR, P, R@k, ...) are identical on that truncated run and on the complete ranking.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Iterator, Mapping

import ir_measures
import numpy as np
from ir_measures import Measure

from mlret_plugin.datasets.ids import lang_of as query_lang
from mlret_plugin.constants import DEFAULT_MEASURES, LAREQA_MEASURES, MAX_RANK_DIST  # noqa: F401  (re-exported)

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

# Measures whose values on a truncated run would differ from the complete ranking.
_COUNTING_MEASURES = ("NumRet", "NumRelRet", "NumQ", "SetP", "SetR", "SetF", "SetAP", "SetRelP")


def parse_measures(names: Iterable[str | Measure]) -> list[Measure]:
    """ir_measures names (``AP``, ``nDCG@10``, ``MaxRankDist``) -> measures, with a clear error."""
    register_max_rank_dist()
    measures = []
    for name in names:
        try:
            measures.append(ir_measures.parse_measure(name))
        except (NameError, ValueError) as e:
            raise ValueError(f"unknown measure {name!r} ({e}); use ir_measures names such as AP, nDCG@10, R@100, MaxRankDist") from e
    return measures


def qrels_dict(qrels_iter: Iterable) -> dict[str, dict[str, int]]:
    """ir_datasets / ir_measures qrels (namedtuples with query_id, doc_id, relevance) -> dict of dicts."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for qrel in qrels_iter:
        out[qrel.query_id][qrel.doc_id] = int(qrel.relevance)
    return dict(out)


# --- MaxRankDist ------------------------------------------------------------------------------------------------

def trec_order(doc_ids: list[str], scores: Iterable[float]) -> list[str]:
    """Doc ids in trec_eval's ranking order: score descending, then doc_id descending."""
    return [d for _, d in sorted(zip(scores, doc_ids), key=lambda x: (x[0], x[1]), reverse=True)]


def max_rank_dist(relevant: Iterable[str], ranking: list[str]) -> float:
    """Highest minus lowest rank among a query's relevant documents in one ranking (trec order).

    A relevant document that is not retrieved is placed just below the ranking (rank len+1), so on a
    truncated run the value is a lower bound; on a full ranking it is exact. No relevant document -> 0.
    """
    position = {d: i + 1 for i, d in enumerate(ranking)}
    ranks = [position.get(d, len(ranking) + 1) for d in relevant]
    return float(max(ranks) - min(ranks)) if ranks else 0.0


def _max_rank_dist_impl(qrels_df, run_df) -> Iterator[tuple[str, float]]:
    relevant = qrels_df[qrels_df["relevance"] > 0].groupby("query_id")["doc_id"].apply(list).to_dict()
    for qid, group in run_df.groupby("query_id"):
        ranking = trec_order(group["doc_id"].tolist(), group["score"].tolist())
        yield qid, max_rank_dist(relevant.get(qid, []), ranking)


def register_max_rank_dist() -> Measure:
    """Define MaxRankDist with ir_measures and register its name (idempotent); returns the measure."""
    registry = ir_measures.measures.registry
    if MAX_RANK_DIST in registry:
        return registry[MAX_RANK_DIST]()
    measure = ir_measures.define(
        _max_rank_dist_impl,
        name=MAX_RANK_DIST,
        support_cutoff=False,
        pretty_name="Max rank distance",
        short_desc=(
            "Highest minus lowest rank among a query's relevant (parallel) candidates (Huang et al. SIGIR'23); "
            "lower is better. LAReQA tables macro-average it over query languages."
        ),
    )
    ir_measures.measures.register(type(measure), name=MAX_RANK_DIST)
    return measure


def is_max_rank_dist(measure: Measure) -> bool:
    return getattr(measure, "NAME", None) == MAX_RANK_DIST


# --- per-query values and aggregation ---------------------------------------------------------------------------

def per_query(measures: list[Measure], qrels: Qrels, run: Run) -> dict[Measure, dict[str, float]]:
    """Per-query values of every measure for every query of ``qrels`` (absent from the run -> DEFAULT)."""
    values: dict[Measure, dict[str, float]] = {m: {} for m in measures}
    run_judged = {qid: docs for qid, docs in run.items() if qid in qrels}
    if run_judged:
        for metric in ir_measures.iter_calc(measures, {q: qrels[q] for q in run_judged}, run_judged):
            values[metric.measure][metric.query_id] = float(metric.value)
    for measure in measures:
        for qid in qrels:
            values[measure].setdefault(qid, float(measure.DEFAULT))
    return values


def aggregate(measure: Measure, values: Mapping[str, float]) -> float:
    """Mean over queries; MaxRankDist: mean per query language, then mean over languages."""
    if not values:
        return float("nan")
    if is_max_rank_dist(measure):
        by_lang: dict[str, list[float]] = defaultdict(list)
        for qid, value in values.items():
            by_lang[query_lang(qid)].append(value)
        return float(np.mean([np.mean(v) for v in by_lang.values()]))
    return float(np.mean(list(values.values())))


def evaluate(measures: Iterable[str | Measure], qrels: Qrels, run: Run) -> dict[Measure, float]:
    """Aggregate values of ``measures`` for ``run`` over every query of ``qrels``."""
    parsed = parse_measures(measures)
    values = per_query(parsed, qrels, run)
    return {m: aggregate(m, values[m]) for m in parsed}


# --- full depth ------------------------------------------------------------------------------------------------

def _max_cutoff(measures: list[Measure]) -> int:
    cutoffs = [m.params.get("cutoff") for m in measures]
    return max([c for c in cutoffs if isinstance(c, int)] or [1])


class FullDepthEvaluator:
    """Exact measures over complete rankings, fed with score chunks (rows = queries, columns = documents).

    ``add(row_query_ids, scores)`` evaluates one chunk and drops it, so memory stays bounded by the chunk.
    MaxRankDist is computed from exact ranks (trec order) with numpy; other measures go through
    ir_measures on each query's truncated ranking (see the module docstring for why that is exact).
    """

    def __init__(self, measures: Iterable[str | Measure], qrels: Qrels, doc_ids: list[str]):
        self.measures = parse_measures(measures)
        bad = [str(m) for m in self.measures if type(m).__name__.lstrip("_") in _COUNTING_MEASURES]
        if bad:
            raise ValueError(f"{bad} count retrieved documents; they have no full-depth meaning here")
        self.qrels = qrels
        self.doc_ids = np.asarray(doc_ids, dtype=object)
        column = {d: i for i, d in enumerate(doc_ids)}
        # Rank of each doc_id in string order: trec_eval breaks score ties by doc_id descending.
        self._name_rank = np.empty(len(doc_ids), dtype=np.int64)
        self._name_rank[np.argsort(np.asarray(doc_ids, dtype=str), kind="stable")] = np.arange(len(doc_ids))
        self._judged_cols = {q: np.array([column[d] for d in docs if d in column], dtype=np.int64) for q, docs in qrels.items()}
        self._relevant_cols = {
            q: np.array([column[d] for d, rel in docs.items() if rel > 0 and d in column], dtype=np.int64)
            for q, docs in qrels.items()
        }
        self._ir_measures = [m for m in self.measures if not is_max_rank_dist(m)]
        self._keep_top = min(_max_cutoff(self.measures), len(doc_ids))
        self.values: dict[Measure, dict[str, float]] = {m: {} for m in self.measures}
        self.kept_entries = 0  # size of the truncated runs handed to ir_measures (for benchmarks)

    def ranks(self, scores: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """1-based trec-order ranks of columns ``cols`` in one row of scores."""
        s = scores[cols][:, None]
        higher = (scores[None, :] > s).sum(axis=1)
        tied_before = ((scores[None, :] == s) & (self._name_rank[None, :] > self._name_rank[cols][:, None])).sum(axis=1)
        return higher + tied_before + 1

    def add(self, query_ids: list[str], scores: np.ndarray) -> None:
        if scores.shape != (len(query_ids), len(self.doc_ids)):
            raise ValueError(f"score chunk has shape {scores.shape}, expected ({len(query_ids)}, {len(self.doc_ids)})")
        judged = [q for q in query_ids if q in self.qrels]
        for measure in self.measures:
            if is_max_rank_dist(measure):
                for i, qid in enumerate(query_ids):
                    cols = self._relevant_cols.get(qid)
                    if cols is not None:
                        ranks = self.ranks(scores[i], cols) if len(cols) else np.zeros(1)
                        self.values[measure][qid] = float(ranks.max() - ranks.min())
        if not self._ir_measures or not judged:
            return
        if self._keep_top < scores.shape[1]:
            kth = -np.partition(-scores, self._keep_top - 1, axis=1)[:, self._keep_top - 1]
        else:
            kth = scores.min(axis=1)
        run: dict[str, dict[str, float]] = {}
        for i, qid in enumerate(query_ids):
            if qid not in self.qrels:
                continue
            row, cols = scores[i], self._judged_cols[qid]
            threshold = min(kth[i], row[cols].min()) if len(cols) else kth[i]
            keep = np.flatnonzero(row >= threshold)
            self.kept_entries += len(keep)
            run[qid] = dict(zip(self.doc_ids[keep].tolist(), row[keep].tolist()))
        for measure, values in per_query(self._ir_measures, {q: self.qrels[q] for q in run}, run).items():
            self.values[measure].update(values)

    def per_query(self) -> dict[Measure, dict[str, float]]:
        """Values for every query of the qrels (queries never added count DEFAULT)."""
        out = {}
        for measure, values in self.values.items():
            out[measure] = {q: values.get(q, float(measure.DEFAULT)) for q in self.qrels}
        return out

    def results(self) -> dict[Measure, float]:
        return {m: aggregate(m, v) for m, v in self.per_query().items()}
