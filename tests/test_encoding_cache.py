"""The on-disk embedding cache: bit-exact reuse, fingerprint misses, bad files rebuilt loudly, two writer
processes, `mlret cache info|clear`, --no-cache and the env switch."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import mlret_plugin
from mlret_plugin.encoding import CacheWarning, EmbeddingCache, default_cache_dir, entry_key
from mlret_plugin.evaluation.dense import DenseRetriever
from tiny_models import tiny_model_dir, tiny_sentence_transformer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_sentence_transformer("bert", tmp_path_factory.mktemp("tiny"))


def _retriever(model, cache, **kw):
    return DenseRetriever(model, show_progress_bar=False, cache=cache, **kw)


def test_cached_run_equals_uncached_bit_for_bit(lareqa_home, tiny, tmp_path):
    cache = EmbeddingCache(tmp_path / "emb")
    first = _retriever(tiny, cache).encode("xquad-r/de-en")
    second_retriever = _retriever(tiny, EmbeddingCache(tmp_path / "emb"))
    second = second_retriever.encode("xquad-r/de-en")
    uncached = _retriever(tiny, False).encode("xquad-r/de-en")
    assert second_retriever.encoded_texts == 0 and second_retriever.cached_texts > 0
    for a, b, c in ((first.queries, second.queries, uncached.queries), (first.docs, second.docs, uncached.docs)):
        assert a.dtype == torch.float32 and torch.equal(a, b) and torch.equal(b, c)
    assert second.doc_ids == uncached.doc_ids and second.query_ids == uncached.query_ids


def test_what_defines_an_embedding_changes_the_key(lareqa_home, tmp_path):
    model = tiny_sentence_transformer("bert", tmp_path / "m")
    cache = EmbeddingCache(tmp_path / "emb")

    def encoded_after(change):
        change()
        retriever = _retriever(model, cache, candidates="sentence")
        retriever.encode("xquad-r/en")
        return retriever.encoded_texts

    assert encoded_after(lambda: None) > 0
    assert encoded_after(lambda: None) == 0  # nothing changed: all from the cache
    assert encoded_after(lambda: mlret_plugin.set_attention(model, "local", window=2)) > 0
    assert encoded_after(lambda: mlret_plugin.set_attention(model, "local", window=2, backend="torch")) > 0
    assert encoded_after(lambda: mlret_plugin.set_attention(model, "dense")) == 0  # back to the first entry
    with torch.no_grad():  # an in-place weight update, as an optimizer step does
        assert encoded_after(lambda: next(model.parameters()).add_(0.01)) > 0
    assert encoded_after(lambda: setattr(model, "max_seq_length", 16)) > 0
    other = _retriever(model, cache, candidates="sentence", query_prompt="query: ")
    other.encode("xquad-r/en")
    en = mlret_plugin.datasets.parse_dataset_id("xquad-r/en").load()
    # a new query prompt re-encodes the queries only; the candidates come from the cache
    assert (other.encoded_texts, other.cached_texts) == (len(list(en.queries_iter())), en.docs_count())


def _one_entry(cache: EmbeddingCache) -> Path:
    entries = cache.entries()
    assert entries
    return entries[0]


@pytest.mark.parametrize("damage", ["flip_payload_byte", "truncate", "other_version", "not_ours", "empty"])
def test_bad_entry_is_rebuilt_with_a_warning_never_used(lareqa_home, tiny, tmp_path, damage):
    cache = EmbeddingCache(tmp_path / "emb")
    reference = _retriever(tiny, cache, candidates="sentence").encode("xquad-r/en")
    for path in cache.entries():
        data = bytearray(path.read_bytes())
        if damage == "flip_payload_byte":
            data[-3] ^= 0x40
        elif damage == "truncate":
            data = data[: len(data) - 7]
        elif damage == "other_version":
            data[8:12] = struct.pack("<I", 99)
        elif damage == "not_ours":
            data[:8] = b"NOTMLRET"
        else:
            data = bytearray()
        path.write_bytes(bytes(data))
    retriever = _retriever(tiny, cache, candidates="sentence")
    expected = {"flip_payload_byte": "checksum mismatch", "truncate": "truncated", "other_version": "format version 99",
                "not_ours": "not an mlret embedding file", "empty": "truncated"}[damage]
    with pytest.warns(CacheWarning, match=expected):
        again = retriever.encode("xquad-r/en")
    assert retriever.cached_texts == 0 and retriever.encoded_texts > 0
    assert torch.equal(again.docs, reference.docs) and torch.equal(again.queries, reference.queries)
    healed = _retriever(tiny, cache, candidates="sentence")
    healed.encode("xquad-r/en")  # the rebuilt entries are valid again
    assert healed.encoded_texts == 0


def test_entry_filed_under_another_key_is_not_used(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put("a" * 64, torch.ones(2, 3))
    cache.path_for("b" * 64).parent.mkdir(parents=True, exist_ok=True)
    cache.path_for("a" * 64).rename(cache.path_for("b" * 64))
    with pytest.warns(CacheWarning, match="filed under"):
        assert cache.get("b" * 64) is None


def test_key_depends_on_order_and_pair_boundaries():
    assert entry_key("f", ["a", "b"]) != entry_key("f", ["b", "a"])
    assert entry_key("f", [("ab", "c")]) != entry_key("f", [("a", "bc")])
    assert entry_key("f", [("a", "b")]) != entry_key("f", ["a", "b"])
    assert entry_key("f", ["a"]) != entry_key("g", ["a"])


_WORKER = textwrap.dedent("""
    import os, sys, time, warnings
    from pathlib import Path
    import torch
    warnings.simplefilter("error")  # an unusable entry (a half-written file seen by the reader) fails the run
    from mlret_plugin.encoding import EmbeddingCache
    root, role = Path(sys.argv[1]), sys.argv[2]
    cache = EmbeddingCache(root)
    matrix = torch.arange(4000 * 1000, dtype=torch.float32).reshape(4000, 1000)  # 16 MB: writes take a while
    cache.put("c" * 64, matrix, {"model": "writer"})
    (root / f"ready-{role}").touch()
    while len(list(root.glob("ready-*"))) < 2:  # start together: imports take seconds on a busy machine
        time.sleep(0.001)
    start, rounds = time.time(), 0
    while time.time() < start + 3:
        if role == "writer":
            cache.put("c" * 64, matrix, {"model": "writer"})
        else:
            got = cache.get("c" * 64)
            assert got is not None and torch.equal(got, matrix), rounds
        rounds += 1
    print("ok", rounds)
""")


def test_two_processes_writing_and_reading_one_entry_at_once(tmp_path):
    # A writer rewrites the entry while a reader reads it in a loop: with a non-atomic write (the file
    # truncated, then filled) the reader sees a short file within the first rounds (checked by hand).
    root = tmp_path / "emb"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(root), role], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for role in ("writer", "reader")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert all(out.startswith("ok") and int(out.split()[1]) > 0 for out, _ in outs)
    cache = EmbeddingCache(root)
    assert len(cache.entries()) == 1 and not list(root.rglob("*.tmp"))
    assert torch.equal(cache.get("c" * 64), torch.arange(4000 * 1000, dtype=torch.float32).reshape(4000, 1000))


def test_default_location_env_override_and_switch(lareqa_home, tiny, monkeypatch, tmp_path):
    monkeypatch.delenv("MLRET_EMBEDDING_CACHE_DIR", raising=False)
    monkeypatch.delenv("MLRET_EMBEDDING_CACHE", raising=False)
    assert default_cache_dir() == lareqa_home / "mlret" / "embeddings"
    assert _retriever(tiny, None).cache.root == lareqa_home / "mlret" / "embeddings"
    monkeypatch.setenv("MLRET_EMBEDDING_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert _retriever(tiny, None).cache.root == tmp_path / "elsewhere"
    monkeypatch.setenv("MLRET_EMBEDDING_CACHE", "0")
    assert _retriever(tiny, None).cache is None
    assert _retriever(tiny, True).cache is not None  # an explicit choice wins over the env switch


def test_cli_no_cache_then_cache_info_and_clear(lareqa_home, tmp_path, monkeypatch, capsys):
    from mlret_plugin.cli.main import main

    root = tmp_path / "emb"
    monkeypatch.setenv("MLRET_EMBEDDING_CACHE_DIR", str(root))
    model = str(tiny_model_dir("bert", tmp_path))
    argv = ["lareqa", "xquad-r", "--langs", "de,en", "--model", model, "--candidates", "sentence", "--backend", "torch",
            "--precision", "fp32"]
    assert main([*argv, "--no-cache", "--out", str(tmp_path / "a")]) == 0
    assert EmbeddingCache(root).entries() == []
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert "0 texts reused" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    assert " encoded" in (err := capsys.readouterr().err) and ", 0 encoded" in err
    assert (tmp_path / "b" / "results.jsonl").read_text() == (tmp_path / "c" / "results.jsonl").read_text()
    entries = len(EmbeddingCache(root).entries())
    assert entries == 4  # queries and candidates of de and en
    assert main(["cache", "info"]) == 0
    info = capsys.readouterr().out
    assert str(root) in info and f"{entries} entries" in info and "st-bert-sentence: 4 entries" in info
    assert main(["cache", "clear"]) == 0
    assert f"removed {entries} files" in capsys.readouterr().err
    assert EmbeddingCache(root).entries() == []
    rows = [json.loads(line) for line in (tmp_path / "c" / "results.jsonl").read_text().splitlines()]
    assert all(r["query_prompt"] == "" and r["candidates"] == "sentence" for r in rows)


def test_unwritable_cache_warns_and_keeps_the_embeddings(lareqa_home, tiny, tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path / "emb")

    def refuse(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "put", refuse)
    reference = _retriever(tiny, False, candidates="sentence").encode("xquad-r/en")
    with pytest.warns(RuntimeWarning, match="could not write to .*No space left"):
        got = _retriever(tiny, cache, candidates="sentence").encode("xquad-r/en")
    assert torch.equal(got.docs, reference.docs)


def test_experiment_no_cache_flag_reaches_the_grid_builders(monkeypatch):
    """--no-cache is passed to the builders as cache=False (the environment is left alone); without it the
    grids use the default cache (None)."""
    import os

    from mlret_plugin.cli.main import main
    from mlret_plugin.experiments import attention, ratio

    seen = {}

    def stop(name):
        def builder(*args, cache="unset", **kwargs):
            seen[name] = cache
            raise ValueError("stopped by the test")
        return builder

    monkeypatch.setattr(attention, "build_grid", stop("attention"))
    monkeypatch.setattr(ratio, "build_ratio_grid", stop("ratio"))
    monkeypatch.setattr(ratio, "parse_model", lambda text: text)  # no model resolution in this test
    before = {k: v for k, v in os.environ.items() if k.startswith("MLRET")}
    assert main(["experiment", "attention", "--collection", "xquad-r", "--model", "m", "--out", "o"]) == 2
    assert main(["experiment", "ratio", "--train", "mlqa-r", "--eval", "xquad-r", "--models", "m", "--max-steps", "1",
                 "--out", "o", "--no-cache"]) == 2
    assert seen == {"attention": None, "ratio": False}
    assert {k: v for k, v in os.environ.items() if k.startswith("MLRET")} == before
