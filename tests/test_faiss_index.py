"""`mlret dense-index` (FAISS indexes for Pyserini's `search.faiss`, encoded by the plugin) on generated data with
tiny random models: the index round-trips, the printed command, running it gives `mlret evaluate --model`'s AP,
mismatched query flags are a loud warning naming the matching ones, an interrupted build leaves no index."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from mlret_plugin.cli.main import main
from mlret_plugin.datasets import parse_dataset_id
from mlret_plugin.evaluation import faiss_index
from mlret_plugin.evaluation.dense import DenseRetriever
from tiny_models import tiny_model_dir

DATASET = "xquad-r/en"


@pytest.fixture
def plain_model(tmp_path) -> Path:
    return tiny_model_dir("bert", tmp_path)


def prompted_model(tmp_path: Path, query_prompt: str, name: str) -> Path:
    """The tiny model with its own sentence-transformers prompts (as e5's 'query: ' / 'passage: ')."""
    from sentence_transformers import SentenceTransformer

    out = tmp_path / name
    if not (out / "modules.json").is_file():
        model = SentenceTransformer(str(tiny_model_dir("bert", tmp_path)), device="cpu")
        model.prompts = {"query": query_prompt, "passage": "passage: "}
        model.save(str(out))
    return out


def build(model_dir: Path, tmp_path: Path, encoder: bool = False, **kwargs):
    """Build the index of DATASET; ``encoder``: give the model's folder for Pyserini's --encoder, which the build
    checks with Pyserini's own encoder (its import needs the JVM); else pre-encoded queries only."""
    retriever = DenseRetriever(str(model_dir), candidates="sentence", show_progress_bar=False,
                               cache=tmp_path / "emb-cache")
    return retriever, *faiss_index.build_faiss_index(retriever, DATASET, model_path=str(model_dir) if encoder else None,
                                                     **kwargs)


@pytest.fixture
def encoder_check_passes(monkeypatch):
    """Pyserini's encoder agrees (its real check needs the JVM: the slow tests below run it)."""
    monkeypatch.setattr(faiss_index, "check_pyserini_encoder", lambda path, flags, texts, emb: (0.0, len(texts)))


def printed_command(capsys) -> list[str]:
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("mlret pyserini search.faiss "), out
    return shlex.split(out[-1])


# --- the index ----------------------------------------------------------------------------------------------------

def test_index_round_trips(lareqa_home, plain_model, tmp_path):
    retriever, index_dir, meta, built = build(plain_model, tmp_path, out=tmp_path / "idx")
    assert built and index_dir == tmp_path / "idx"
    index, doc_ids, read_meta = faiss_index.read_index(index_dir)
    encoded = retriever.encode(DATASET)
    assert doc_ids == encoded.doc_ids and read_meta == meta
    assert np.array_equal(index.reconstruct_n(0, index.ntotal), encoded.docs.numpy())  # the plugin's embeddings
    assert meta["model_fingerprint"] and meta["candidates"] == "sentence" and meta["normalize"] is True
    assert meta["pooling"] == {"mode": "mean", "include_prompt": True}
    assert (meta["query_prompt"], meta["passage_prompt"]) == ("", "")
    assert meta["docs"] == 12 and meta["queries"] == 8 and meta["index_type"] == "flat"
    assert meta["query_path"] == faiss_index.PRE_ENCODED and "no model folder or hub id" in meta["query_path_reason"]

    queries = {q.query_id: q.text for q in parse_dataset_id(DATASET).load().queries_iter()}
    topics = json.loads((index_dir / faiss_index.TOPICS_FILE).read_text())
    assert {qid: t["title"] for qid, t in topics.items()} == queries
    by_text = faiss_index.read_encoded_queries(index_dir / faiss_index.ENCODED_QUERIES_DIR)  # as Pyserini reads them
    for qid, row in zip(encoded.query_ids, encoded.queries.numpy()):
        assert np.array_equal(by_text[queries[qid]], row)

    # FAISS's search over the index = the plugin's exact search
    scores, found = index.search(np.stack([by_text[queries[q]] for q in encoded.query_ids]), 5)
    ours = retriever.run(DATASET, depth=5)
    for qid, row_scores, row in zip(encoded.query_ids, scores, found):
        theirs = {doc_ids[i]: s for i, s in zip(row, row_scores)}
        assert np.allclose(sorted(theirs.values()), sorted(ours[qid].values()), atol=1e-5)  # ties may swap at rank 5
        assert all(abs(theirs[d] - ours[qid][d]) < 1e-5 for d in theirs.keys() & ours[qid].keys())

    again = build(plain_model, tmp_path, out=tmp_path / "idx")
    assert again[2] == meta and again[3] is False  # found, not rebuilt


@pytest.mark.slow  # Pyserini's encoder (its import needs the JVM)
def test_plain_model_is_searched_with_pyserinis_own_encoder(jvm, lareqa_home, plain_model, tmp_path):
    _, index_dir, meta, _ = build(plain_model, tmp_path, encoder=True, out=tmp_path / "idx")
    assert meta["query_path"] == faiss_index.PYSERINI_ENCODER, meta["query_path_reason"]
    assert meta["pyserini_encoder_flags"] == ["--encoder", str(plain_model), "--encoder-class", "auto",
                                              "--pooling", "mean", "--l2-norm"]
    assert meta["pyserini_encoder_check"]["max_abs_diff"] < faiss_index.ENCODER_TOLERANCE
    assert meta["pyserini_encoder_check"]["queries"] == 8


@pytest.mark.slow
def test_a_prompt_ending_in_a_space_becomes_the_query_prefix(jvm, lareqa_home, tmp_path):
    model = prompted_model(tmp_path, "query: ", "st-prompted")
    _, _, meta, _ = build(model, tmp_path, encoder=True, out=tmp_path / "idx")
    assert (meta["query_prompt"], meta["passage_prompt"]) == ("query: ", "passage: ")
    assert meta["query_path"] == faiss_index.PYSERINI_ENCODER, meta["query_path_reason"]
    assert meta["pyserini_encoder_flags"][-2:] == ["--query-prefix", "query:"]  # Pyserini adds the space
    assert meta["pyserini_encoder_check"]["max_abs_diff"] < faiss_index.ENCODER_TOLERANCE


def test_a_prompt_pyserini_cannot_give_means_pre_encoded_queries(lareqa_home, tmp_path, caplog):
    model = prompted_model(tmp_path, "q:", "st-q-colon")  # Pyserini would encode "q: text"
    _, index_dir, meta, _ = build(model, tmp_path, encoder=True, out=tmp_path / "idx")  # no check needed: no JVM
    assert meta["query_path"] == faiss_index.PRE_ENCODED and meta["pyserini_encoder_flags"] is None
    assert "'q:' cannot be given to Pyserini" in meta["query_path_reason"]
    assert "pre-encoded queries" in caplog.text and "'q:' cannot be given" in caplog.text  # said so, loudly
    assert faiss_index.query_flags(index_dir, meta) == ["--encoded-queries", str(index_dir / "encoded-queries")]


def test_encoded_queries_also_answer_to_the_tsv_topic_text(tmp_path):
    texts = ["café  au\tlait", "plain"]
    emb = np.eye(2, dtype=np.float32)
    faiss_index.write_encoded_queries(tmp_path / "q", texts, emb, {})
    by_text = faiss_index.read_encoded_queries(tmp_path / "q")
    assert set(by_text) == {"café  au\tlait", "café au lait", "plain"}  # `mlret datasets topics` TSV form too
    assert np.array_equal(by_text["café au lait"], emb[0])


def test_hnsw_records_its_recall_against_flat(lareqa_home, plain_model, tmp_path):
    hnsw = faiss_index.check_hnsw(8, 40, 16)
    _, index_dir, meta, _ = build(plain_model, tmp_path, out=tmp_path / "hnsw", index_type="hnsw", hnsw=hnsw)
    index, _, _ = faiss_index.read_index(index_dir)
    assert type(index).__name__ == "IndexHNSWFlat" and index.hnsw.efSearch == 16
    assert meta["hnsw"]["recall_k"] == 12 and meta["hnsw"]["recall_vs_flat"] == 1.0  # 12 candidates: all found
    assert faiss_index.query_flags(index_dir, meta, hits=10)[-2:] == ["--ef-search", "16"]
    assert faiss_index.query_flags(index_dir, meta)[-2:] == ["--ef-search", "1000"]  # never below --hits
    # FAISS's HNSW does not widen efSearch to k: below --hits is a warning
    assert faiss_index.search_mismatch(index_dir, ef_search=1000, hits=1000) is None
    warning = faiss_index.search_mismatch(index_dir, hits=1000)
    assert "efSearch 16 is below --hits 1000" in warning and "--ef-search 1000" in warning
    with pytest.raises(ValueError, match="ef_search must be an integer >= 1"):
        faiss_index.check_hnsw(8, 40, 0)


def test_an_interrupted_build_leaves_no_index(lareqa_home, plain_model, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(faiss_index, "write_encoded_queries", interrupted)  # after the FAISS index was written
    with pytest.raises(KeyboardInterrupt):
        build(plain_model, tmp_path, out=tmp_path / "idx")
    assert not (tmp_path / "idx").exists()
    assert not list(tmp_path.glob(".idx.tmp-*"))  # no staging folder left either
    monkeypatch.undo()
    assert build(plain_model, tmp_path, out=tmp_path / "idx")[3] is True


def test_an_out_folder_holding_something_else_is_an_error(lareqa_home, plain_model, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(faiss_index.FaissIndexError, match="exists and is not an mlret FAISS index; delete it"):
        build(plain_model, tmp_path, out=tmp_path / "taken")
    build(plain_model, tmp_path, out=tmp_path / "idx")
    with pytest.raises(faiss_index.FaissIndexError, match=r"holds another index \(xquad-r/en, st-bert-sentence, "
                                                          r"candidates sentence, flat\), not this one \(.*hnsw\)"):
        build(plain_model, tmp_path, out=tmp_path / "idx", index_type="hnsw")
    with pytest.raises(faiss_index.FaissIndexError, match="without 'bpr'"):
        build(plain_model, tmp_path, out=tmp_path / "bpr-index")


# --- the command ----------------------------------------------------------------------------------------------------

def test_dense_index_prints_the_search_command_last(lareqa_home, plain_model, tmp_path, capsys, monkeypatch,
                                                    encoder_check_passes):
    monkeypatch.chdir(tmp_path)
    assert main(["dense-index", DATASET, "--model", str(plain_model), "--candidates", "sentence"]) == 0
    argv = printed_command(capsys)
    root = faiss_index.default_root()
    index = Path(argv[argv.index("--index") + 1])
    assert index.parent == root / "xquad-r_en" and index.name.startswith("st-bert-sentence--sentence--flat--")
    assert argv[:3] == ["mlret", "pyserini", "search.faiss"]
    assert argv[argv.index("--topics") + 1] == str(index / "topics.json")
    assert argv[argv.index("--encoder") + 1] == str(plain_model)
    assert "--l2-norm" in argv and argv[argv.index("--pooling") + 1] == "mean"
    assert argv[-4:] == ["--hits", "1000", "--output", f"mlret-out/faiss-runs/xquad-r_en.{index.name}.trec"]

    assert main(["dense-index", DATASET, "--model", str(plain_model), "--candidates", "sentence",
                 "--pre-encoded-queries", "--run-output", "run.trec"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"found {index}")
    argv = shlex.split(out.strip().splitlines()[-1])
    assert "--encoder" not in argv and argv[argv.index("--encoded-queries") + 1] == str(index / "encoded-queries")
    assert argv[-2:] == ["--output", "run.trec"]


def test_dense_index_errors_name_the_argument(lareqa_home, plain_model, tmp_path, capsys):
    assert main(["dense-index", "xquad-r/xx", "--model", str(plain_model)]) == 2
    assert "mlret dense-index: error:" in capsys.readouterr().err
    assert main(["dense-index", DATASET, "--model", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["dense-index", DATASET, "--model", str(plain_model), "--index-type", "hnsw", "--hnsw-m", "0"]) == 2
    assert "hnsw_m must be an integer >= 1" in capsys.readouterr().err


# --- search.faiss flags against the index ---------------------------------------------------------------------------

@pytest.fixture
def prompted_index(lareqa_home, tmp_path, encoder_check_passes):
    model = prompted_model(tmp_path, "query: ", "st-prompted")
    _, index_dir, meta, _ = build(model, tmp_path, encoder=True, out=tmp_path / "idx")
    assert meta["query_path"] == faiss_index.PYSERINI_ENCODER, meta["query_path_reason"]
    return model, index_dir, meta


MATCHING = dict(encoder_class="auto", pooling="mean", l2_norm=True, query_prefix="query:")


@pytest.mark.parametrize("change, expected", [
    ({}, None),
    ({"query_prefix": None}, "the query prompt: no --query-prefix gives '' before each query, the index's "
                             "queries take 'query: '"),
    ({"query_prefix": "query: "}, "the query prompt"),
    ({"pooling": "cls"}, "--pooling cls is not the model's mean pooling"),
    ({"l2_norm": False}, "--l2-norm is missing"),
    ({"encoder_class": "dpr"}, "Pyserini picks its 'dpr' query encoder"),
    ({"encoder": "intfloat/multilingual-e5-small"}, "is another model than the index's"),
    ({"pca_model": "pca.faiss"}, "--pca-model pca.faiss projects the queries"),
])
def test_mismatched_encoder_flags_name_the_matching_ones(prompted_index, change, expected):
    model, index_dir, meta = prompted_index
    warning = faiss_index.search_mismatch(index_dir, **{"encoder": str(model), **MATCHING, **change})
    if expected is None:
        assert warning is None
        return
    assert expected in warning and str(index_dir) in warning
    assert f"Fix: use --encoder {model} --encoder-class auto --pooling mean --l2-norm --query-prefix query:" in warning
    assert f"--encoded-queries {index_dir / 'encoded-queries'}" in warning


def test_encoded_queries_are_checked_against_the_index(prompted_index, lareqa_home, plain_model, tmp_path):
    model, index_dir, meta = prompted_index
    own = index_dir / "encoded-queries"
    assert faiss_index.search_mismatch(index_dir, encoded_queries=str(own)) is None
    other = build(tiny_model_dir("bert", tmp_path / "seed1", seed=1), tmp_path, out=tmp_path / "other")[1]
    assert "were encoded by another model (st-bert-sentence)" in faiss_index.search_mismatch(
        index_dir, encoded_queries=str(other / "encoded-queries"))
    # the same weights without the prompt: the queries were encoded for another prompt
    unprompted = build(plain_model, tmp_path, out=tmp_path / "unprompted")[1]
    assert "with the query prompt '', the index's queries take 'query: '" in faiss_index.search_mismatch(
        index_dir, encoded_queries=str(unprompted / "encoded-queries"))
    (tmp_path / "foreign").mkdir()
    assert "were not encoded by mlret" in faiss_index.search_mismatch(index_dir, encoded_queries=str(tmp_path / "foreign"))


def test_an_encoder_on_a_pre_encoded_only_index_is_a_mismatch(lareqa_home, tmp_path):
    model = prompted_model(tmp_path, "q:", "st-q-colon")
    _, index_dir, meta, _ = build(model, tmp_path, encoder=True, out=tmp_path / "idx")
    warning = faiss_index.search_mismatch(index_dir, encoder=str(model), **MATCHING)
    assert "Pyserini's query encoder cannot give this index's query embeddings" in warning
    assert f"Fix: use --encoded-queries {index_dir / 'encoded-queries'}." in warning


# --- Pyserini's search.faiss (in the JVM mlret starts) --------------------------------------------------------------

def evaluate_ap(dataset_id: str, model: Path, run_file: Path, out: Path) -> dict[str, float]:
    assert main(["evaluate", dataset_id, "--model", str(model), "--candidates", "sentence", "--run", str(run_file),
                 "--measures", "AP", "--backend", "torch", "--precision", "fp32", "--out", str(out)]) == 0
    return {r["system"]: r["value"] for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


@pytest.mark.slow  # the JVM (Pyserini's search module imports Lucene's classes)
@pytest.mark.parametrize("prompt, extra", [
    (None, []),                                # plain model: Pyserini's own encoder
    ("query: ", []),                           # a prompt: Pyserini's encoder with --query-prefix
    ("q:", []),                                # a prompt Pyserini cannot give: pre-encoded queries
    (None, ["--pre-encoded-queries"]),
])
def test_the_printed_command_gives_mlret_evaluates_ap(jvm, lareqa_home, tmp_path, capsys, monkeypatch, prompt, extra):
    monkeypatch.setenv("MLRET_EMBEDDING_CACHE_DIR", str(tmp_path / "emb-cache"))
    model = tiny_model_dir("bert", tmp_path) if prompt is None else prompted_model(tmp_path, prompt, "st-p")
    run_file = tmp_path / "run.trec"
    assert main(["dense-index", DATASET, "--model", str(model), "--candidates", "sentence",
                 "--run-output", str(run_file), *extra]) == 0
    argv = printed_command(capsys)
    assert ("--encoder" in argv) == (prompt != "q:" and not extra)
    assert main(argv[1:]) == 0
    assert "mlret pyserini: WARNING" not in capsys.readouterr().err
    ap = evaluate_ap(DATASET, model, run_file, tmp_path / "eval")
    assert ap.keys() == {"st-p-sentence" if prompt else "st-bert-sentence", "run"}
    theirs, ours = ap.pop("run"), ap.popitem()[1]
    print(f"AP: Pyserini search.faiss {theirs:.6f}, mlret evaluate --model {ours:.6f}")
    assert theirs == pytest.approx(ours, abs=2e-3)


@pytest.mark.slow
def test_search_faiss_with_the_wrong_prompt_is_a_loud_warning(jvm, prompted_index, tmp_path, capsys):
    from mlret_plugin.cli import pyserini as pyserini_cli

    model, index_dir, meta = prompted_index
    args = ["--index", str(index_dir), "--topics", str(index_dir / "topics.json"), "--encoder", str(model),
            "--encoder-class", "auto", "--pooling", "mean", "--l2-norm", "--output", str(tmp_path / "run.trec")]
    assert pyserini_cli.faiss_search_warning(args + ["--query-prefix", "query:"]) is None
    assert pyserini_cli.faiss_search_warning(args + ["--query-pre", "query:"]) is None  # abbreviations parse alike
    warning = pyserini_cli.faiss_search_warning(args)
    assert "the query prompt" in warning and "--query-prefix query:" in warning
    # class inferred from the encoder's name, as Pyserini infers it
    assert pyserini_cli._encoder_class("/models/my-dpr-model", None, ["dkrr", "dpr", "auto"]) == "dpr"
    assert pyserini_cli._encoder_class("/models/e5", None, ["dkrr", "dpr"]) == "auto"
    assert main(["pyserini", "search.faiss", *args]) == 0  # the run is still made, after the banner
    err = capsys.readouterr().err
    assert "mlret pyserini: WARNING: " + str(index_dir) in err and "Fix: use --encoder" in err
    lucene = pyserini_cli.search_analysis_warning(["--index", str(index_dir), "--topics", "t.tsv"])
    assert "FAISS (dense) index" in lucene and "search.faiss" in lucene
