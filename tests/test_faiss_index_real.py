"""Real XQuAD-R (../shared) with offline-e5: the run of the command `mlret dense-index` prints, made by Pyserini's
own `search.faiss` through `mlret pyserini`, evaluated with `mlret evaluate --run`, gives the AP of
`mlret evaluate --model offline-e5 --candidates sentence` within 0.002, in English and in Chinese. Both share the
candidate embeddings through the embedding cache. `-s` prints both APs, the query path and HNSW's recall."""
from __future__ import annotations

import json
import shlex
import time

import pytest

from mlret_plugin.cli.main import main
from mlret_plugin.evaluation import faiss_index

pytestmark = [pytest.mark.realdata, pytest.mark.slow]  # the real model and the JVM


@pytest.fixture(scope="module")
def offline_e5(real_lareqa_home):
    from mlret_plugin.models.specs import resolve_model_spec

    try:
        return resolve_model_spec("offline-e5")  # converted into the session's ir_datasets home once
    except ValueError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_real_faiss_run_gives_mlret_dense_ap(jvm, real_lareqa_home, offline_e5, tmp_path, capsys, lang):
    dataset_id = f"xquad-r/{lang}"
    run_file = tmp_path / "run.trec"
    start = time.perf_counter()
    assert main(["dense-index", dataset_id, "--model", "offline-e5", "--candidates", "sentence",
                 "--run-output", str(run_file)]) == 0
    built = time.perf_counter() - start
    out = capsys.readouterr().out.strip().splitlines()
    argv = shlex.split(out[-1])
    assert argv[:3] == ["mlret", "pyserini", "search.faiss"] and argv[-4:] == ["--hits", "1000", "--output", str(run_file)]
    index_dir = argv[argv.index("--index") + 1]
    meta = faiss_index.read_metadata(index_dir)
    assert meta["query_prompt"] == "query: " and meta["passage_prompt"] == "passage: "
    assert meta["pooling"] == {"mode": "mean", "include_prompt": True} and meta["normalize"]

    start = time.perf_counter()
    assert main(argv[1:]) == 0
    searched = time.perf_counter() - start
    assert "mlret pyserini: WARNING" not in capsys.readouterr().err

    out_dir = tmp_path / "eval"
    assert main(["evaluate", dataset_id, "--model", "offline-e5", "--candidates", "sentence", "--run", str(run_file),
                 "--measures", "AP", "--backend", "torch", "--precision", "fp32", "--out", str(out_dir)]) == 0
    ap = {r["system"]: r["value"] for r in map(json.loads, (out_dir / "results.jsonl").read_text().splitlines())}
    pyserini_ap, mlret_ap = ap.pop("run"), ap.pop("multilingual-e5-small-q4-offline-sentence")
    check = meta["pyserini_encoder_check"] or {}
    why = meta["query_path_reason"] or f"max |diff| {check.get('max_abs_diff')} on {check.get('queries')} queries"
    with capsys.disabled():
        print(f"\n{dataset_id}: AP Pyserini search.faiss {pyserini_ap:.4f}, mlret evaluate --model {mlret_ap:.4f} "
              f"(|diff| {abs(pyserini_ap - mlret_ap):.5f}); query path {meta['query_path']} ({why}); "
              f"dense-index {built:.1f} s (encoding {meta['seconds']['encode']:.1f} s), search.faiss {searched:.1f} s")
    assert pyserini_ap == pytest.approx(mlret_ap, abs=2e-3)

    if lang == "zh":  # HNSW on the same (cached) embeddings: its recall@1000 against flat
        assert main(["dense-index", dataset_id, "--model", "offline-e5", "--candidates", "sentence",
                     "--index-type", "hnsw"]) == 0
        hnsw_dir = shlex.split(capsys.readouterr().out.strip().splitlines()[-1])
        hnsw = faiss_index.read_metadata(hnsw_dir[hnsw_dir.index("--index") + 1])["hnsw"]
        with capsys.disabled():
            print(f"{dataset_id} HNSW (M {hnsw['m']}, efSearch {hnsw['ef_search']}): recall@{hnsw['recall_k']} "
                  f"against flat {hnsw['recall_vs_flat']:.4f}")
        assert hnsw["recall_vs_flat"] >= 0.99
