"""Real XQuAD-R (../shared): BM25 mono runs through Pyserini / Lucene for English and the languages with
our own analysis (Greek, Thai, Vietnamese). The benchmark (benchmarks/bm25.py) covers all 11 languages."""
from __future__ import annotations

import ir_measures
import pytest

from mlret_plugin.datasets import parse_dataset_id
from mlret_plugin.evaluation.analyzers import analyze
from mlret_plugin.evaluation.bm25 import BM25Retriever

pytestmark = pytest.mark.realdata

# Measured AP (k1=0.9, b=0.4, depth 1000): en 0.817, el 0.757, th 0.784, vi 0.818. A broken analyzer
# (English rules on Greek, unsegmented Thai) falls far below these floors.
AP_FLOOR = {"en": 0.75, "el": 0.70, "th": 0.70, "vi": 0.75}


@pytest.fixture(scope="module")
def retriever(real_lareqa_home, tmp_path_factory):
    return BM25Retriever(cache_dir=tmp_path_factory.mktemp("bm25-real"), show_progress_bar=False)


@pytest.mark.parametrize("lang", sorted(AP_FLOOR))
def test_real_bm25_mono_ap(retriever, lang):
    subset = parse_dataset_id(f"xquad-r/{lang}")
    dataset = subset.load()
    run = retriever.run(subset)
    assert set(run) == {q.query_id for q in dataset.queries_iter()} and len(run) == 1190
    ap = ir_measures.calc_aggregate([ir_measures.AP], list(dataset.qrels_iter()), run)[ir_measures.AP]
    print(f"xquad-r/{lang} BM25 AP {ap:.4f}")
    assert ap > AP_FLOOR[lang]


def test_real_thai_sentences_are_split_into_words(real_lareqa_home):
    docs = list(parse_dataset_id("xquad-r/th").load().docs_iter())[:50]
    terms = [analyze("th", doc.text) for doc in docs]
    # Unsegmented, a Thai sentence is a handful of space-separated runs; segmented, dozens of words.
    assert sum(map(len, terms)) > 2 * sum(len(doc.text.split()) for doc in docs)
