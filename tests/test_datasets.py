"""The LAReQA ir_datasets entries on generated fixture files (no ../shared)."""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from collections import Counter

import ir_datasets
import ir_datasets.util.download
import ir_measures
import pytest

import mlret_plugin
from mlret_plugin.datasets import dataset_ids
from lareqa_fixtures import ARTICLES, PARAGRAPHS, QUESTIONS_PER_PARAGRAPH, SENTENCES, fixture_json
from mlret_plugin.datasets import COLLECTIONS, dataset_ids, group_id, lang_of, parse_dataset_id, pool
from mlret_plugin.datasets.lareqa import parse_lareqa_file
from mlret_plugin.datasets.seed import seed_cache

N_QUESTIONS = ARTICLES * PARAGRAPHS * QUESTIONS_PER_PARAGRAPH
N_SENTENCES = ARTICLES * PARAGRAPHS * SENTENCES


def test_every_id_is_registered_and_counted():
    ids = dataset_ids()
    assert len(ids) == 172
    assert len([i for i in ids if i.startswith("xquad-r/") and "-" in i.split("/")[1]]) == 110
    assert len([i for i in ids if i.startswith("mlqa-r/") and "-" in i.split("/")[1]]) == 42
    registered = set(ir_datasets.registry)
    assert set(ids) <= registered


def _registry_state() -> tuple[int, dict]:
    """(how many ids ir_datasets has, {our id: its registered Dataset})."""
    registry = ir_datasets.registry
    return len(list(registry)), {i: registry[i] for i in dataset_ids()}


def test_register_is_idempotent():
    mlret_plugin.register()
    before, datasets = _registry_state()
    mlret_plugin.register()
    from mlret_plugin.datasets.lareqa import _init

    _init()
    after, again = _registry_state()
    assert after == before  # nothing registered twice
    assert all(again[i] is datasets[i] for i in datasets)  # the same Dataset objects: nothing replaced
    assert len(datasets) == 172


def test_register_tolerates_ids_registered_by_another_copy(monkeypatch):
    """A second copy of the plugin (another install on sys.path) finds every id taken: it keeps the first
    copy's datasets and registers nothing, where ir_datasets' registry would raise for a duplicate."""
    from mlret_plugin.datasets import lareqa

    mlret_plugin.register()
    before, datasets = _registry_state()
    with pytest.raises(RuntimeError):  # what a naive second registration would hit
        ir_datasets.registry.register("xquad-r/en", datasets["xquad-r/en"])
    monkeypatch.setattr(lareqa, "_registered", False)
    lareqa._init()
    after, again = _registry_state()
    assert after == before and all(again[i] is datasets[i] for i in datasets)


def test_entry_points_are_declared_and_load():
    (ep,) = [e for e in importlib.metadata.entry_points(group="ir_datasets.plugins") if e.name == "mlret"]
    assert ep.load() is mlret_plugin.register
    ep.load()()
    (pt,) = [e for e in importlib.metadata.entry_points(group="pyterrier.dataset_provider") if e.name == "mlret"]
    provider = pt.load()()
    assert "xquad-r/de-en" in provider.list_dataset_names()


def test_xquad_mono(lareqa_home):
    ds = ir_datasets.load("xquad-r/de")
    docs = list(ds.docs_iter())
    queries = list(ds.queries_iter())
    qrels = list(ds.qrels_iter())
    assert len(docs) == N_SENTENCES and len(queries) == N_QUESTIONS and len(qrels) == N_QUESTIONS
    assert ds.docs_lang() == "de" and ds.queries_lang() == "de"
    assert {d.lang for d in docs} == {"de"} and {q.lang for q in queries} == {"de"}
    assert docs[0].doc_id == "de-a0-p0-s0" and docs[0].context.startswith(docs[0].text)
    # the relevant sentence is the one holding the answer: questions ask about sentences 0 and 2
    rel = {q.query_id: q.doc_id for q in qrels}
    assert rel["de-q000"] == "de-a0-p0-s0" and rel["de-q112"] == "de-a1-p1-s2"
    assert ds.docs_store().get("de-a1-p0-s2").text.startswith("de fact k102")


def test_xquad_cross_pair(lareqa_home):
    ds = ir_datasets.load("xquad-r/de-en")
    assert ds.docs_lang() == "en" and ds.queries_lang() == "de"
    qrels = list(ds.qrels_iter())
    assert all(lang_of(q.query_id) == "de" and lang_of(q.doc_id) == "en" for q in qrels)
    assert len(qrels) == N_QUESTIONS


def test_xquad_pool(lareqa_home):
    ds = ir_datasets.load("xquad-r")
    n = len(COLLECTIONS["xquad-r"])
    assert sum(1 for _ in ds.docs_iter()) == n * N_SENTENCES
    assert sum(1 for _ in ds.queries_iter()) == n * N_QUESTIONS
    per_query = Counter(q.query_id for q in ds.qrels_iter())
    assert set(per_query.values()) == {n}
    # a question is relevant to the answer sentence of its id in every language
    rel = {q.doc_id for q in ds.qrels_iter() if q.query_id == "th-q012"}
    assert rel == {f"{lang}-a0-p1-s2" for lang in COLLECTIONS["xquad-r"]}
    assert ds.docs_lang() is None and ds.queries_lang() is None


def test_mlqa_pair_keeps_only_questions_answered_in_doc_language(lareqa_home):
    ds = ir_datasets.load("mlqa-r/en-de")
    de_ids = {group_id(q.query_id) for q in ir_datasets.load("mlqa-r/de").queries_iter()}
    en_queries = [q.query_id for q in ds.queries_iter()]
    assert {group_id(q) for q in en_queries} == de_ids
    assert len(en_queries) < N_QUESTIONS
    assert {q.query_id for q in ds.qrels_iter()} == set(en_queries)
    # MLQA paragraphs differ across languages: English has one sentence more per paragraph here
    assert ir_datasets.load("mlqa-r/en").docs_count() > ir_datasets.load("mlqa-r/de").docs_count()


def test_restricted_pool_is_built_on_the_fly(lareqa_home):
    subset = pool("xquad-r", ["en", "de", "es"])
    assert subset.dataset_id == "xquad-r[de,en,es]" and subset.setting == "multi"
    ds = subset.load()
    assert {d.lang for d in ds.docs_iter()} == {"de", "en", "es"}
    assert set(Counter(q.query_id for q in ds.qrels_iter()).values()) == {3}


def test_ir_measures_accepts_qrels(lareqa_home):
    qrels = list(ir_datasets.load("xquad-r/es-en").qrels_iter())
    run = [ir_measures.ScoredDoc(q.query_id, q.doc_id, 1.0) for q in qrels]
    assert ir_measures.calc_aggregate([ir_measures.AP], qrels, run)[ir_measures.AP] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", ["xquad-r/xx", "mlqa-r/el", "xquad-r/en-xx", "xquad-r/en-en", "nope/en"])
def test_unknown_ids_are_clear_errors(bad):
    with pytest.raises(ValueError, match=r"has no language|not an mlret dataset id|needs two languages"):
        parse_dataset_id(bad)


@pytest.mark.parametrize("bad, expected", [("xquad-r/xx", "xquad-r has no language 'xx'"),
                                           ("mlqa-r/el", "mlqa-r has no language 'el'"),
                                           ("xquad-r/en-en", "needs two languages")])
def test_unknown_ids_through_ir_datasets_load_name_the_fix(bad, expected):
    from mlret_plugin.datasets.lareqa import UnknownDatasetId

    with pytest.raises(KeyError) as info:  # ir_datasets' convention for unknown ids
        ir_datasets.load(bad)
    assert isinstance(info.value, UnknownDatasetId) and expected in str(info.value)
    assert bad not in ir_datasets.registry._registered  # nothing half-registered


def test_cli_unknown_id_and_bad_seed_folder_are_one_line_errors(tmp_path, capsys):
    from mlret_plugin.cli.main import main

    assert main(["datasets", "export", "mlqa-r/el", "qrels"]) == 2
    assert "mlqa-r has no language 'el'" in capsys.readouterr().err
    assert main(["datasets", "seed", str(tmp_path)]) == 2
    assert "no {xquad-r,mlqa-r}/{lang}.json files found" in capsys.readouterr().err


def test_answer_outside_every_sentence_names_file_and_question(tmp_path):
    data = fixture_json("xquad-r", "en")
    qa = data["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"][0]["answer_start"] = 10_000
    path = tmp_path / "en.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"{path}.*{qa['id']}.*answer_start=10000"):
        parse_lareqa_file(path, "en")


def test_truncated_cache_file_is_an_md5_error(lareqa_home):
    from mlret_plugin.datasets.lareqa import cache_dir

    path = cache_dir() / "xquad-r" / "hi.json"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"hi\.json: md5 .* expected"):
        list(ir_datasets.load("xquad-r/hi").docs_iter())


def test_missing_file_without_network_names_the_seed_command(lareqa_home, monkeypatch):
    from mlret_plugin.datasets import lareqa

    (lareqa.cache_dir() / "xquad-r" / "vi.json").unlink()
    monkeypatch.setattr(ir_datasets.util.download, "_DownloadConfig", _OfflineDownloadConfig)
    with pytest.raises(FileNotFoundError, match=r"xquad-r/vi.*mlret datasets seed"):
        list(ir_datasets.load("xquad-r/vi").queries_iter())
    assert not list((lareqa.cache_dir() / "xquad-r").glob("vi.json*"))


class _OfflineDownloadConfig:
    """Stands in for ir_datasets' downloader with a network that refuses every request."""

    def __init__(self, contents):
        self._contents = contents

    def context(self, key, base_path):
        return _OfflineContext(self._contents[key], base_path)


class _OfflineContext:
    def __init__(self, contents, base_path):
        self._contents, self._base = contents, base_path

    def __getitem__(self, lang):
        from ir_datasets.util import Download

        class Refused:
            def stream(self):
                raise ConnectionError("network unreachable")

        return Download([Refused()], cache_path=str(self._base / self._contents[lang]["cache_path"]))


def test_seed_rejects_md5_mismatch_and_copies_nothing(tmp_path, lareqa_home):
    from lareqa_fixtures import write_fixture_collection

    src = write_fixture_collection(tmp_path / "bad")
    (src / "xquad-r" / "de.json").write_text("{}")
    before = {p: p.stat().st_mtime_ns for p in lareqa_home.rglob("*.json")}
    with pytest.raises(ValueError, match=r"de\.json: md5"):
        seed_cache(src)
    assert {p: p.stat().st_mtime_ns for p in lareqa_home.rglob("*.json")} == before


def test_seed_rejects_incomplete_collection(tmp_path, lareqa_home):
    from lareqa_fixtures import write_fixture_collection

    src = write_fixture_collection(tmp_path / "partial")
    (src / "mlqa-r" / "zh.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing zh\.json"):
        seed_cache(src)


def _mlret(*args, env_home):
    import os

    env = dict(os.environ, IR_DATASETS_HOME=str(env_home))
    return subprocess.run([sys.executable, "-m", "mlret_plugin", *args], capture_output=True, text=True, env=env)


def test_cli_seed_rejects_unknown_files_and_list_shows_ids(tmp_path, monkeypatch):
    from lareqa_fixtures import write_fixture_collection

    # A subprocess cannot see monkeypatched md5s, so seed the fixture-free way: the CLI must reject them.
    src = write_fixture_collection(tmp_path / "src")
    out = _mlret("datasets", "seed", str(src), env_home=tmp_path / "home")
    assert out.returncode != 0 and "md5" in out.stderr
    listed = _mlret("datasets", "list", env_home=tmp_path / "home")
    assert listed.returncode == 0
    assert {"xquad-r", "xquad-r/de-en", "mlqa-r/zh"} <= set(listed.stdout.split())


def test_cli_export_qrels_in_process(lareqa_home, capsys):
    from mlret_plugin.cli.main import main

    assert main(["datasets", "export", "xquad-r/de-en", "qrels"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == N_QUESTIONS
    qid, it, did, rel = lines[0].split()
    assert (lang_of(qid), it, lang_of(did), rel) == ("de", "0", "en", "1")


def test_documentation_shows_mlqa_licence():
    assert "CC BY-NC 4.0" in ir_datasets.load("mlqa-r/de").documentation()["desc"]
    assert "CC BY-SA 4.0" in ir_datasets.load("xquad-r").documentation()["desc"]


def test_pyterrier_get_dataset(lareqa_home):
    pt = pytest.importorskip("pyterrier")
    ds = pt.get_dataset("mlret:xquad-r/de-en")
    topics, qrels = ds.get_topics(), ds.get_qrels()
    assert list(topics.columns) == ["qid", "query"] and len(topics) == N_QUESTIONS
    assert set(qrels.label) == {1} and qrels.docno.str.startswith("en-").all()
    assert (ds.get_topics_lang(), ds.get_corpus_lang()) == ("de", "en")
    with pytest.raises(KeyError, match="xquad-r/xx"):
        pt.get_dataset("mlret:xquad-r/xx")
