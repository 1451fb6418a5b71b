"""TREC runs: round trip, atomic writes, predictable names, Pyserini-style files, malformed input."""
from __future__ import annotations

import numpy as np
import pytest

from mlret_plugin.evaluation import runs
from mlret_plugin.evaluation.runs import MalformedRunError, read_run, run_path, write_run


def test_round_trip_keeps_float32_scores_ties_and_order(tmp_path):
    scores = np.random.default_rng(0).standard_normal(50).astype(np.float32)
    run = {"en-q1": {f"en-a0-p{i}-s0": float(s) for i, s in enumerate(scores)}, "de-q2": {"x": 1.0, "y": 1.0}}
    path = write_run(run, tmp_path / "r.trec", tag="dense")
    back = read_run(path)
    assert back.keys() == run.keys()
    for qid in run:  # 9 digits: the same float32 value, so the same order and ties
        assert {d: np.float32(s) for d, s in back[qid].items()} == {d: np.float32(s) for d, s in run[qid].items()}
    lines = path.read_text().splitlines()
    assert lines[0].split()[1] == "Q0" and lines[0].split()[3] == "1" and lines[0].split()[5] == "dense"
    # trec_eval order on ties: doc_id descending
    assert [line.split()[2] for line in lines if line.startswith("de-q2")] == ["y", "x"]


def test_run_names_are_predictable(tmp_path):
    assert run_path(tmp_path, "bm25", "xquad-r/de-en") == tmp_path / "runs" / "xquad-r_de-en.bm25.trec"
    assert run_path(tmp_path, "all-MiniLM/x y", "xquad-r[en,de]").name == "xquad-r_en+de.all-MiniLM_x_y.trec"


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "r.trec"
    target.write_text("q Q0 d 1 1.0 old\n")

    def broken_ranked(docs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "ranked", broken_ranked)
    with pytest.raises(KeyboardInterrupt):
        write_run({"q": {"d": 2.0}}, target, tag="new")
    assert target.read_text() == "q Q0 d 1 1.0 old\n"
    assert list(tmp_path.iterdir()) == [target]


def test_reads_a_pyserini_cli_run(tmp_path):
    path = tmp_path / "pyserini.txt"
    path.write_text("en-1 Q0 en-a0-p0-s1 1 12.345600 Anserini\nen-1 Q0 en-a0-p0-s0 2 3.000000 Anserini\n\n")
    assert read_run(path) == {"en-1": {"en-a0-p0-s1": 12.3456, "en-a0-p0-s0": 3.0}}


@pytest.mark.parametrize(
    "text,message",
    [
        ("q Q0 d 1 1.0\n", r"r.trec:1: expected 6 fields"),
        ("q Q0 d 1 1.0 t\nq Q0 d one 1.0 t\n", r"r.trec:2: rank 'one' must be an integer"),
        ("q Q0 d 1 high t\n", r"score 'high'"),
        ("q Q0 d 1 nan t\n", r"NaN"),
        ("q Q0 d 1 1.0 t\nq Q0 d 2 0.5 t\n", r"r.trec:2: document 'd' appears twice"),
        ("\n", r"empty run file"),
    ],
)
def test_malformed_runs_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "r.trec"
    path.write_text(text)
    with pytest.raises(MalformedRunError, match=message):
        read_run(path)


def test_missing_run_file_and_bad_tag(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.trec"):
        read_run(tmp_path / "nope.trec")
    with pytest.raises(ValueError, match="tag"):
        write_run({"q": {"d": 1.0}}, tmp_path / "r.trec", tag="two words")
