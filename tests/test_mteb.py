"""MTEB tasks over the plugin's ir_datasets entries, on the tiny fixture data with a tiny random model: the task
list and metadata, data loaded from the ir_datasets cache, one small task run offline through ``mteb.evaluate``
writing MTEB's result files with the plugin's prompts, and MTEB's nDCG@10 / MAP@1000 equal to ir_measures'
nDCG@10 / AP on the plugin's own dense run at depth 1000 (DenseRetriever + evaluation.measures)."""
from __future__ import annotations

import ast
import json
import socket
import traceback
from pathlib import Path

import pytest

mteb = pytest.importorskip("mteb", reason="mteb is in the mteb extra: pip install -e '.[mteb]'")

from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402

from mlret_plugin import mteb as plugin_mteb  # noqa: E402
from mlret_plugin.datasets import COLLECTIONS, parse_dataset_id  # noqa: E402
from mlret_plugin.evaluation.dense import DenseRetriever  # noqa: E402
from mlret_plugin.evaluation.measures import evaluate, qrels_dict, trec_order  # noqa: E402
from tiny_models import tiny_model_dir  # noqa: E402

# MTEB's score key -> the ir_measures measure it equals (docs/mteb.md). mrr_at_10 is RR@10 in trec_eval's order:
# ir_measures' RR (trec_eval's recip_rank) on the run cut to its top 10 (ir_measures' own RR@10 orders tied scores
# by doc id ascending, and the tiny model here ties often: sentences of [UNK] tokens embed alike).
MAPPING = {"ndcg_at_10": "nDCG@10", "map_at_1000": "AP@1000", "recall_at_10": "R@10", "precision_at_10": "P@10",
           "hit_rate_at_10": "Success@10"}


def top(run: dict, k: int) -> dict:
    """Each query's top k in trec_eval's order (score descending, then doc id descending)."""
    return {q: {d: docs[d] for d in trec_order(list(docs), list(docs.values()))[:k]} for q, docs in run.items()}


@pytest.fixture
def offline(monkeypatch):
    """Every attempt to resolve a host name or open a connection is recorded (address, stack) and refused."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append((args[:2], "".join(traceback.format_stack(limit=30))))
        raise OSError("network access refused by the test: MTEB on the plugin's tasks must run offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return attempts


def test_tasks_and_metadata():
    names = plugin_mteb.task_names()
    assert names == ["XQuAD-R-Mono", "XQuAD-R-Cross", "XQuAD-R-Pool", "MLQA-R-Mono", "MLQA-R-Cross", "MLQA-R-Pool"]
    tasks = {t.metadata.name: t for t in plugin_mteb.get_tasks()}
    assert list(tasks) == names
    for name, task in tasks.items():
        meta, collection = task.metadata, "xquad-r" if name.startswith("XQuAD") else "mlqa-r"
        assert isinstance(task, AbsTaskRetrieval) and meta.type == "Retrieval" and meta.main_score == "ndcg_at_10"
        assert meta.license == {"xquad-r": "cc-by-sa-4.0", "mlqa-r": "cc-by-nc-4.0"}[collection]
        assert meta.reference == "https://github.com/google-research-datasets/lareqa"
        assert "LAReQA" in meta.description and "ir_datasets" in meta.description and "Roy" in meta.bibtex_citation
        assert meta.dataset["path"] == f"ir_datasets:{collection}" and len(meta.dataset["revision"]) == 16
        langs = COLLECTIONS[collection]
        expected = {"Mono": list(langs), "Cross": [f"{q}-{d}" for q in langs for d in langs if q != d],
                    "Pool": ["default"]}[name.rsplit("-", 1)[1]]
        assert task.hf_subsets == expected
    assert len(tasks["XQuAD-R-Cross"].hf_subsets) == 110 and len(tasks["MLQA-R-Cross"].hf_subsets) == 42
    assert tasks["XQuAD-R-Cross"].metadata.eval_langs["hi-en"] == ["hin-Deva", "eng-Latn"]
    assert tasks["MLQA-R-Pool"].metadata.eval_langs == ["arb-Arab", "deu-Latn", "eng-Latn", "spa-Latn", "hin-Deva",
                                                        "vie-Latn", "zho-Hans"]
    by_id = plugin_mteb.get_tasks("xquad-r/de-en", "mlqa-r/zh", "xquad-r", "MLQA-R-Pool")
    assert [(t.metadata.name, t.hf_subsets) for t in by_id] == [
        ("XQuAD-R-Cross", ["de-en"]), ("MLQA-R-Mono", ["zh"]), ("XQuAD-R-Pool", ["default"]),
        ("MLQA-R-Pool", ["default"])]
    with pytest.raises(ValueError, match="neither an mlret MTEB task .* nor a dataset id"):
        plugin_mteb.get_task("xquad-r/xx")


def test_importing_the_module_does_not_import_mteb():
    """mteb is imported inside the functions only (the module is imported by docs / the package cheaply)."""
    tree = ast.parse(Path(plugin_mteb.__file__).read_text())
    top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    modules = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module for n in top if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m and m.split(".")[0] == "mteb"], modules


def test_data_come_from_the_ir_datasets_cache(lareqa_home, offline):
    task = plugin_mteb.get_task("mlqa-r/de-en")
    task.load_data()
    split = task.dataset["de-en"]["test"]
    dataset = parse_dataset_id("mlqa-r/de-en").load()
    assert list(split["corpus"]["id"]) == [d.doc_id for d in dataset.docs_iter()]
    assert list(split["corpus"]["text"]) == [d.text for d in dataset.docs_iter()]
    assert list(split["queries"]["id"]) == [q.query_id for q in dataset.queries_iter()]
    assert split["relevant_docs"] == qrels_dict(dataset.qrels_iter())
    assert "title" not in split["corpus"].column_names  # MTEB would put a title before the sentence
    assert not offline, "\n".join(stack for _, stack in offline)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """Built before ``offline``: saving a SentenceTransformer writes a model card, which asks the hub."""
    return tiny_model_dir("bert", tmp_path_factory.mktemp("tiny"))


def test_mteb_evaluate_writes_results_equal_to_ir_measures(tiny_dir, lareqa_home, tmp_path, offline, monkeypatch):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_dir), device="cpu")
    # The plugin's prompt rule uses "passage" for candidates; MTEB's own rule would ignore that name.
    model.prompts = {"query": "query: ", "passage": "passage: "}
    encoder = plugin_mteb.encoder(model, name="mlret/tiny-bert")
    assert model.prompts == {"query": "query: ", "passage": "passage: "}, "wrapping must not change the model"
    seen = {"query": set(), "document": set()}
    for role in seen:
        real = getattr(model, f"encode_{role}")

        def recording(inputs, *args, _real=real, _role=role, **kwargs):
            seen[_role].add(kwargs.get("prompt"))
            return _real(inputs, *args, **kwargs)

        monkeypatch.setattr(model, f"encode_{role}", recording)

    cache = mteb.ResultCache(tmp_path / "mteb")
    result = mteb.evaluate(encoder, tasks=plugin_mteb.get_tasks("xquad-r/en", "xquad-r"), cache=cache,
                           encode_kwargs={"batch_size": 32, "show_progress_bar": False}, show_progress_bar=False,
                           co2_tracker=False)
    assert not offline, "\n".join(stack for _, stack in offline)
    assert not result.exceptions
    assert seen == {"query": {"query: "}, "document": {"passage: "}}

    folder = tmp_path / "mteb" / "results" / "mlret__tiny-bert" / encoder.mteb_model_meta.revision
    assert (folder / "model_meta.json").is_file()
    files = {name: json.loads((folder / f"{name}.json").read_text()) for name in ("XQuAD-R-Mono", "XQuAD-R-Pool")}
    assert files["XQuAD-R-Mono"]["task_name"] == "XQuAD-R-Mono"
    assert files["XQuAD-R-Mono"]["dataset_revision"] == plugin_mteb.get_task("xquad-r").metadata.dataset["revision"]

    retriever = DenseRetriever(model, candidates="sentence", cache=False, show_progress_bar=False)
    assert (retriever.query_prompt, retriever.passage_prompt) == ("query: ", "passage: ")
    for dataset_id, name, subset in (("xquad-r/en", "XQuAD-R-Mono", "en"), ("xquad-r", "XQuAD-R-Pool", "default")):
        [scores] = files[name]["scores"]["test"]
        assert scores["hf_subset"] == subset and scores["main_score"] == scores["ndcg_at_10"]
        qrels = qrels_dict(parse_dataset_id(dataset_id).load().qrels_iter())
        run = retriever.run(dataset_id, depth=1000)
        values = {str(m): v for m, v in evaluate(list(MAPPING.values()) + ["AP"], qrels, run).items()}
        for key, measure in MAPPING.items():
            assert scores[key] == pytest.approx(values[measure], abs=0.002), (dataset_id, key, measure)
        [rr_at_10] = evaluate(["RR"], qrels, top(run, 10)).values()
        assert scores["mrr_at_10"] == pytest.approx(rr_at_10, abs=0.002), dataset_id
        # Fewer than 1,000 candidates here: AP of the depth-1000 run is AP over the complete ranking.
        assert scores["map_at_1000"] == pytest.approx(values["AP"], abs=0.002)
        assert 0 < scores["ndcg_at_10"] < 1
