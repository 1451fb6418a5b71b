"""Real XQuAD-R (../shared): full-depth evaluation with a tiny model equals ir_measures on the complete run."""
from __future__ import annotations

import pytest

from mlret_plugin.datasets import pool
from mlret_plugin.evaluation.dense import DenseRetriever
from mlret_plugin.evaluation.measures import parse_measures, per_query, qrels_dict
from tiny_models import tiny_sentence_transformer

pytestmark = pytest.mark.realdata


def test_real_pool_full_depth_equals_complete_run(real_lareqa_home, tmp_path):
    subset = pool("xquad-r", ["el", "th"])
    dataset = subset.load()
    qrels = qrels_dict(dataset.qrels_iter())
    assert len(qrels) == 2 * 1190 and all(len(docs) == 2 for docs in qrels.values())
    retriever = DenseRetriever(tiny_sentence_transformer("bert", tmp_path), candidates="sentence",
                               show_progress_bar=False, batch_size=128)
    names = ["AP", "R@10", "MaxRankDist"]
    evaluator, _ = retriever.evaluate_full_depth(subset, names, qrels)
    complete = retriever.run(subset, depth=dataset.docs_count())
    sample = {q: qrels[q] for q in list(qrels)[::10]}  # every 10th query keeps the reference check quick
    expected = per_query(parse_measures(names), sample, {q: complete[q] for q in sample})
    got = evaluator.per_query()
    for measure in expected:
        assert got[measure].keys() == qrels.keys()
        worst = max(abs(got[measure][q] - expected[measure][q]) for q in sample)
        assert worst < 1e-9, (measure, worst)
