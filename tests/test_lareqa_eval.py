"""run_lareqa: Mono / Cross / Multi rows and their breakdowns, files only with out_dir, any retriever."""
from __future__ import annotations

import json

import pytest

from mlret_plugin.datasets import pool
from mlret_plugin.evaluation.dense import DenseRetriever
from mlret_plugin.evaluation.lareqa import run_lareqa
from mlret_plugin.evaluation.measures import parse_measures, per_query, qrels_dict
from tiny_models import tiny_sentence_transformer


class FixedRun:
    """A retriever that only ranks (like BM25): every query gets its first relevant doc, except one with no hit."""

    name = "fixed"

    def __init__(self, no_hit_query: str):
        self.no_hit_query = no_hit_query

    def run(self, subset, depth=1000):
        dataset = subset.load()
        qrels = qrels_dict(dataset.qrels_iter())
        docs = [d.doc_id for d in dataset.docs_iter()]
        run = {}
        for qid, judged in qrels.items():
            relevant = sorted(judged)
            others = [d for d in docs if d not in judged][:2]
            run[qid] = {} if qid == self.no_hit_query else {others[0]: 3.0, relevant[0]: 2.0, others[1]: 1.0}
        return run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_sentence_transformer("bert", tmp_path_factory.mktemp("tiny"))


def test_rows_summaries_and_breakdowns(lareqa_home, tiny):
    dense = DenseRetriever(tiny, show_progress_bar=False, name="tiny")
    no_hit = next(iter(pool("xquad-r", ["de"]).load().queries_iter())).query_id
    rows = run_lareqa("xquad-r", [dense, FixedRun(no_hit)], langs=["en", "de", "es"], progress=False)
    for system in ("tiny", "fixed"):
        mine = [r for r in rows if r["system"] == system]
        langs = {r["qlang"] for r in mine if r["breakdown"] == "language"}
        pairs = {(r["qlang"], r["dlang"]) for r in mine if r["breakdown"] == "pair"}
        assert langs == {"en", "de", "es"} and len(pairs) == 6
        assert {r["dataset"] for r in mine if r["breakdown"] == "pool"} == {"xquad-r[de,en,es]"}
        for setting, breakdown in (("mono", "language"), ("cross", "pair"), ("multi", "pool")):
            for measure in ("AP", "R@1", "R@10"):
                detail = [r["value"] for r in mine if r["breakdown"] == breakdown and r["measure"] == measure]
                summary = [r for r in mine if r["breakdown"] == "summary" and r["setting"] == setting and r["measure"] == measure]
                assert len(summary) == 1 and summary[0]["value"] == pytest.approx(sum(detail) / len(detail))
        # MaxRankDist only for the pool (one relevant candidate per query elsewhere), with a per-language breakdown
        mrd = [r for r in mine if r["measure"] == "MaxRankDist"]
        assert {r["setting"] for r in mrd} == {"multi"}
        assert {r["qlang"] for r in mrd if r["breakdown"] == "query_lang"} == {"en", "de", "es"}
    # The ranking-only retriever: AP of the first relevant at rank 2 over 3 relevant = 1/6 in the pool, 1/2 in
    # mono / cross; the query with no hit counts 0 and is not dropped.
    fixed = {(r["breakdown"], r["qlang"], r["dlang"], r["measure"]): r for r in rows if r["system"] == "fixed"}
    assert fixed[("language", "en", "en", "AP")]["value"] == pytest.approx(0.5)
    de = fixed[("language", "de", "de", "AP")]
    assert de["value"] == pytest.approx(0.5 * (de["queries"] - 1) / de["queries"])
    assert fixed[("query_lang", "en", "all", "AP")]["value"] == pytest.approx(1 / 6)


def test_pool_values_match_ir_measures_on_the_complete_ranking(lareqa_home, tiny):
    dense = DenseRetriever(tiny, show_progress_bar=False, name="tiny")
    rows = run_lareqa("xquad-r", [dense], langs=["en", "zh"], settings=["multi"], progress=False)
    subset = pool("xquad-r", ["en", "zh"])
    dataset = subset.load()
    qrels = qrels_dict(dataset.qrels_iter())
    values = per_query(parse_measures(["AP", "R@10"]), qrels, dense.run(subset, depth=dataset.docs_count()))
    for measure, per_q in values.items():
        row = next(r for r in rows if r["breakdown"] == "pool" and r["measure"] == str(measure))
        assert row["value"] == pytest.approx(sum(per_q.values()) / len(per_q), abs=1e-12)


def test_files_only_with_out_dir(lareqa_home, tiny, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    dense = DenseRetriever(tiny, show_progress_bar=False, name="tiny")
    run_lareqa("xquad-r", [dense], langs=["en", "de"], progress=False)
    assert list(cwd.iterdir()) == []
    out = tmp_path / "out"
    rows = run_lareqa("xquad-r", [dense], langs=["en", "de"], out_dir=out, progress=False, run_depth=3)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert all({"dataset", "system", "measure", "value", "setting"} <= set(json.loads(line)) for line in lines)
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "xquad-r_de+en.tiny.trec", "xquad-r_de-en.tiny.trec", "xquad-r_de.tiny.trec",
        "xquad-r_en-de.tiny.trec", "xquad-r_en.tiny.trec",
    ]
    assert (out / "heatmap.tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "Mono mAP" in report and "Multi MaxRankDist" in report and "heatmap.tiny.png" in report


def test_bad_arguments(lareqa_home, tiny):
    dense = DenseRetriever(tiny, show_progress_bar=False, name="x")
    with pytest.raises(ValueError, match="no language"):
        run_lareqa("xquad-r", [dense], langs=["en", "xx"], progress=False)
    with pytest.raises(ValueError, match="unique"):
        run_lareqa("xquad-r", [dense, dense], langs=["en"], progress=False)
    with pytest.raises(ValueError, match="setting"):
        run_lareqa("xquad-r", [dense], langs=["en"], settings=["bilingual"], progress=False)


def test_one_language_gives_mono_rows_only(lareqa_home, tiny):
    dense = DenseRetriever(tiny, candidates="sentence", name="tiny")
    rows = run_lareqa("xquad-r", [dense], langs=["de"], progress=False)
    assert rows and {r["setting"] for r in rows} == {"mono"}
    assert "MaxRankDist" not in {r["measure"] for r in rows}


def test_query_groups_judge_only_those_queries_and_skip_empty_subsets(lareqa_home, tiny, caplog):
    dense = DenseRetriever(tiny, candidates="sentence", name="tiny", show_progress_bar=False)
    # MLQA-like fixture: question q000 exists in English but has no German translation
    rows = run_lareqa("mlqa-r", [dense], langs=["de", "en"], progress=False, query_groups={"q000"})
    judged = {r["dataset"]: r["queries"] for r in rows if r["measure"] == "AP" and r["breakdown"] in ("language", "pair", "pool")}
    assert judged == {"mlqa-r/en": 1, "mlqa-r[de,en]": 1}
    assert "mlqa-r/de: none of the 1 held-out groups" in caplog.text
    with pytest.raises(ValueError, match="query_groups is empty"):
        run_lareqa("mlqa-r", [dense], langs=["de", "en"], progress=False, query_groups=set())


def test_per_query_sink_matches_the_rows_and_round_trips(lareqa_home, tiny, tmp_path):
    from mlret_plugin.evaluation.lareqa import read_per_query
    from mlret_plugin.evaluation.stats import weighted_values

    dense = DenseRetriever(tiny, show_progress_bar=False, name="tiny")
    sink: list[dict] = []
    rows = run_lareqa("xquad-r", [dense], langs=["en", "de", "es"], progress=False, out_dir=tmp_path / "o",
                      per_query_sink=sink)
    for setting, measure in (("mono", "AP"), ("cross", "AP"), ("multi", "AP"), ("multi", "MaxRankDist")):
        summary = next(r for r in rows if r["breakdown"] == "summary" and r["setting"] == setting and r["measure"] == measure)
        values = weighted_values(sink, setting, measure)  # the weights reproduce the reported summary exactly
        assert sum(w * v for w, v in values.values()) == pytest.approx(summary["value"])
    for record in sink:  # one record per subset and measure, with a value for every query of its subset
        row = next(r for r in rows if r["dataset"] == record["dataset"] and r["measure"] == record["measure"]
                   and r["breakdown"] in ("language", "pair", "pool"))
        assert len(record["values"]) == row["queries"]
    assert read_per_query(tmp_path / "o" / "per_query.jsonl.gz") == json.loads(json.dumps(sink))
    assert not list((tmp_path / "o").glob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="per-query values not found"):
        read_per_query(tmp_path / "missing.jsonl.gz")
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a per-query values file"):
        read_per_query(tmp_path / "bad.jsonl.gz")
    assert {r["measure"] for r in sink} == {"AP", "R@1", "R@10", "MaxRankDist"}


def test_systems_are_tested_against_the_first_one(lareqa_home, tiny, tmp_path):
    """With a baseline and two systems, the second one's Mono / Cross / Multi AP and MaxRankDist carry a paired
    test against the first: Δ is exactly the difference of the reported summaries, the CI contains it, and a
    system tested against an identical copy of itself gets p = 1."""
    from mlret_plugin.evaluation.lareqa import read_per_query
    from mlret_plugin.evaluation.paired import test_systems

    dense = DenseRetriever(tiny, show_progress_bar=False, name="tiny")
    no_hit = next(iter(pool("xquad-r", ["de"]).load().queries_iter())).query_id
    out = tmp_path / "o"
    rows = run_lareqa("xquad-r", [FixedRun(no_hit), dense], langs=["en", "de", "es"], progress=False, out_dir=out,
                      baseline="fixed")
    summary = {(r["system"], r["setting"], r["measure"]): r for r in rows if r["breakdown"] == "summary"}
    tested = [r for r in rows if r.get("p_value") is not None]
    assert {(r["system"], r["setting"], r["measure"]) for r in tested} == {
        ("tiny", "mono", "AP"), ("tiny", "cross", "AP"), ("tiny", "multi", "AP"), ("tiny", "multi", "MaxRankDist")}
    for r in tested:
        assert r["baseline"] == "fixed" and r["breakdown"] == "summary"
        assert r["test_delta"] == pytest.approx(r["value"] - summary[("fixed", r["setting"], r["measure"])]["value"])
        assert r["ci_low"] <= r["test_delta"] + 1e-12 and r["test_delta"] <= r["ci_high"] + 1e-12
        assert r["p_value"] <= r["p_holm"] <= 1
        assert r["n_units"] < r["n_queries"]  # a question's translations form one unit
    assert all(r.get("p_value") is None for r in rows if r["system"] == "fixed")
    saved = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sum(r.get("p_value") is not None for r in saved) == len(tested)
    report = (out / "report.md").read_text()
    assert "## Paired tests: each system vs fixed" in report and "tiny vs fixed" in report
    # the same system against itself: no difference at all, p = 1
    records = read_per_query(out / "per_query.jsonl.gz")
    twin = [{**r, "system": "twin"} for r in records if r["system"] == "tiny"]
    rows2 = [dict(r) for r in rows if r["system"] == "tiny"] + [{**r, "system": "twin"} for r in rows if r["system"] == "tiny"]
    for r in rows2:
        r.pop("p_value", None)
    same = test_systems(rows2, records + twin, baseline="tiny")
    assert len(same) == 4 and all(r["p_value"] == 1.0 and r["test_delta"] == 0 for r in same)
    with pytest.raises(ValueError, match="baseline system 'bm25'"):
        test_systems(rows2, records, baseline="bm25")
