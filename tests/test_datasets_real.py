"""The real LAReQA files (../shared): counts against the LAReQA README / paper for all 172 ids."""
from __future__ import annotations

import json
import pkgutil

import ir_datasets
import ir_measures
import pytest

from mlret_plugin.datasets import COLLECTIONS, dataset_ids, group_id

pytestmark = pytest.mark.realdata

# LAReQA README: XQuAD-R 1190 questions per language and these candidates per language.
XQUAD_CANDIDATES = {"ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244, "ru": 1219,
                    "th": 852, "tr": 1167, "vi": 1209, "zh": 1196}
# MLQA-R (questions, candidates) per language.
MLQA = {"ar": (517, 2545), "de": (512, 2362), "en": (1148, 6264), "es": (500, 1787), "hi": (507, 2426),
        "vi": (511, 2828), "zh": (504, 2322)}


def _counts(dataset_id):
    ds = ir_datasets.load(dataset_id)
    qrels = list(ds.qrels_iter())
    return sum(1 for _ in ds.docs_iter()), sum(1 for _ in ds.queries_iter()), qrels


def test_xquad_counts_all_ids(real_lareqa_home):
    for lang, n_docs in XQUAD_CANDIDATES.items():
        docs, queries, qrels = _counts(f"xquad-r/{lang}")
        assert (docs, queries, len(qrels)) == (n_docs, 1190, 1190), lang
        for dlang, n in XQUAD_CANDIDATES.items():
            if dlang != lang:
                docs, queries, qrels = _counts(f"xquad-r/{lang}-{dlang}")
                assert (docs, queries, len(qrels)) == (n, 1190, 1190), (lang, dlang)
    docs, queries, qrels = _counts("xquad-r")
    assert (docs, queries) == (13014, 13090)
    per_query = {}
    for q in qrels:
        per_query[q.query_id] = per_query.get(q.query_id, 0) + 1
    assert set(per_query.values()) == {11} and len(per_query) == 13090


def test_mlqa_counts_all_ids(real_lareqa_home):
    ids_by_lang = {}
    for lang, (n_q, n_docs) in MLQA.items():
        docs, queries, qrels = _counts(f"mlqa-r/{lang}")
        assert (docs, queries, len(qrels)) == (n_docs, n_q, n_q), lang
        ids_by_lang[lang] = {group_id(q.query_id) for q in qrels}
    for qlang in MLQA:
        for dlang, (_, n_docs) in MLQA.items():
            if qlang == dlang:
                continue
            docs, queries, qrels = _counts(f"mlqa-r/{qlang}-{dlang}")
            shared = len(ids_by_lang[qlang] & ids_by_lang[dlang])
            assert (docs, queries, len(qrels)) == (n_docs, shared, shared), (qlang, dlang)
    docs, queries, qrels = _counts("mlqa-r")
    assert (docs, queries) == (20534, 4199)


def test_ir_measures_accepts_qrels_of_every_id(real_lareqa_home):
    for dataset_id in dataset_ids():
        qrels = list(ir_datasets.load(dataset_id).qrels_iter())
        run = {q.query_id: {q.doc_id: 1.0} for q in qrels}
        result = ir_measures.calc_aggregate([ir_measures.R @ 1000], qrels, run)
        assert 0 < result[ir_measures.R @ 1000] <= 1, dataset_id


def test_shipped_metadata_matches_the_data(real_lareqa_home):
    from mlret_plugin.datasets.metadata import compute_metadata

    shipped = json.loads(pkgutil.get_data("mlret_plugin", "datasets/metadata.json"))
    assert shipped == compute_metadata()
    assert ir_datasets.load("mlqa-r").queries_count() == 4199
    assert set(shipped) == set(dataset_ids())
    assert len(COLLECTIONS["xquad-r"]) + len(COLLECTIONS["mlqa-r"]) == 18
