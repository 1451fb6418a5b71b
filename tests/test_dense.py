"""DenseRetriever on the fixture collection with a tiny random BERT: exact search, inputs, reuse, full depth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mlret_plugin.datasets import Subset, parse_dataset_id, pool
from mlret_plugin.evaluation.dense import DenseRetriever
from mlret_plugin.evaluation.measures import parse_measures, per_query, qrels_dict
from tiny_models import tiny_model_dir, tiny_sentence_transformer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_sentence_transformer("bert", tmp_path_factory.mktemp("tiny"))


def _cosine(a, b):
    a = torch.nn.functional.normalize(torch.as_tensor(a), dim=1)
    b = torch.nn.functional.normalize(torch.as_tensor(b), dim=1)
    return (a @ b.T).numpy()


def test_run_is_exact_cosine_search_with_every_query(lareqa_home, tiny):
    subset = parse_dataset_id("xquad-r/de-en")
    dataset = subset.load()
    queries, docs = list(dataset.queries_iter()), list(dataset.docs_iter())
    retriever = DenseRetriever(tiny, candidates="sentence", show_progress_bar=False, name="tiny")
    run = retriever.run(subset, depth=3)
    assert set(run) == {q.query_id for q in queries}
    expected = _cosine(tiny.encode([q.text for q in queries]), tiny.encode([d.text for d in docs]))
    for i, query in enumerate(queries):
        top = np.argsort(-expected[i])[:3]
        assert set(run[query.query_id]) == {docs[j].doc_id for j in top}
        for j in top:
            assert run[query.query_id][docs[j].doc_id] == pytest.approx(float(expected[i, j]), abs=1e-5)


def test_candidates_context_encodes_sentence_and_paragraph_as_a_pair_with_prompts(lareqa_home, tiny):
    doc = next(iter(Subset("xquad-r", ("en",), ("en",)).load().docs_iter()))
    query = next(iter(Subset("xquad-r", ("en",), ("en",)).load().queries_iter()))
    retriever = DenseRetriever(tiny, query_prompt="query: ", passage_prompt="passage: ", show_progress_bar=False)
    encoded = retriever.encode("xquad-r/en")
    d = encoded.docs[encoded.doc_ids.index(doc.doc_id)]
    q = encoded.queries[encoded.query_ids.index(query.query_id)]
    pair = torch.nn.functional.normalize(tiny.encode([("passage: " + doc.text, doc.context)], convert_to_tensor=True), dim=1)[0]
    alone = torch.nn.functional.normalize(tiny.encode(["passage: " + doc.text], convert_to_tensor=True), dim=1)[0]
    prompted = torch.nn.functional.normalize(tiny.encode(["query: " + query.text], convert_to_tensor=True), dim=1)[0]
    assert torch.allclose(d, pair, atol=1e-5) and not torch.allclose(d, alone, atol=1e-3)
    assert torch.allclose(q, prompted, atol=1e-5)


def test_each_language_is_encoded_once_across_settings(lareqa_home, tiny):
    retriever = DenseRetriever(tiny, show_progress_bar=False)
    for dataset_id in ("xquad-r/en", "xquad-r/de", "xquad-r/en-de", "xquad-r/de-en"):
        retriever.run(dataset_id, depth=5)
    after_pairs = retriever.encoded_texts
    retriever.run(pool("xquad-r", ["de", "en"]), depth=5)
    assert retriever.encoded_texts == after_pairs  # the pool reused every embedding
    en = Subset("xquad-r", ("en",), ("en",)).load()
    per_lang = len(list(en.queries_iter())) + en.docs_count()
    assert after_pairs == 2 * per_lang


def test_full_depth_evaluation_equals_ir_measures_on_the_complete_run(lareqa_home, tiny):
    subset = pool("xquad-r", ["en", "de", "zh"])
    dataset = subset.load()
    qrels = qrels_dict(dataset.qrels_iter())
    retriever = DenseRetriever(tiny, show_progress_bar=False)
    names = ["AP", "R@1", "R@10", "MaxRankDist"]
    evaluator, top = retriever.evaluate_full_depth(subset, names, qrels, run_depth=4)
    complete = retriever.run(subset, depth=dataset.docs_count())
    assert all(len(docs) == dataset.docs_count() for docs in complete.values())
    expected = per_query(parse_measures(names), qrels, complete)
    got = evaluator.per_query()
    for measure in expected:
        for qid in qrels:
            assert got[measure][qid] == pytest.approx(expected[measure][qid], abs=1e-9), (measure, qid)
    assert all(len(docs) == 4 for docs in top.values()) and set(top) == set(qrels)


def test_model_from_a_folder_gets_the_folder_name(lareqa_home, tmp_path):
    retriever = DenseRetriever(str(tiny_model_dir("bert", tmp_path)), candidates="sentence", show_progress_bar=False)
    assert retriever.name == "st-bert-sentence"
    assert len(retriever.run("xquad-r/en", depth=1)) == len(list(parse_dataset_id("xquad-r/en").load().queries_iter()))


def test_bad_arguments_are_clear_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="candidates='paragraph'"):
        DenseRetriever(tiny, candidates="paragraph")
    with pytest.raises(ValueError, match="no such folder"):
        DenseRetriever(str(tmp_path / "missing-model"))

    class Euclidean:
        similarity_fn_name = "euclidean"

    with pytest.raises(ValueError, match="similarity 'euclidean'"):
        DenseRetriever(Euclidean())


def test_default_model_falls_back_loudly(monkeypatch, capsys, tmp_path):
    from mlret_plugin.evaluation import models

    monkeypatch.setattr(models, "_in_local_cache", lambda repo: False)
    monkeypatch.setattr(models, "hub_reachable", lambda repo=None, timeout=5.0: False)
    monkeypatch.setattr(models, "offline_minilm_path", lambda: tmp_path)
    assert models.resolve_model_spec("default") == str(tmp_path)
    assert "OFFLINE ENGLISH" in capsys.readouterr().err
    monkeypatch.setattr(models, "offline_minilm_path", lambda: None)
    assert models.resolve_model_spec("default") is None
    assert "BM25 ONLY" in capsys.readouterr().err
    monkeypatch.setattr(models, "hub_reachable", lambda repo=None, timeout=5.0: True)
    assert models.resolve_model_spec("default") == models.DEFAULT_MODEL
    assert capsys.readouterr().err == ""
