"""`mlret evaluate` and `mlret lareqa` end to end on the fixture collection with a tiny model folder."""
from __future__ import annotations

import json

import pytest

from mlret_plugin.cli.main import main
from mlret_plugin import model as swappable
from mlret_plugin.models import specs
from tiny_models import tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(tiny_model_dir("bert", tmp_path_factory.mktemp("tiny")))


def test_lareqa_command_writes_table_runs_report_heatmap(lareqa_home, model_dir, tmp_path, capsys):
    from mlret_plugin.encoding.backends import choose_variant

    out = tmp_path / "out"
    assert main(["lareqa", "xquad-r", "--langs", "de,en", "--model", model_dir, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    backend, precision, _ = choose_variant()  # the default: auto, named in the system when not the reference
    name = "st-bert" if (backend, precision) == ("torch", "fp32") else f"st-bert-{backend}-{precision}"
    assert "| system | Mono mAP | Mono R@1 | Mono R@10 | Cross mAP" in printed and f"| {name} |" in printed
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["setting"] for r in rows} == {"mono", "cross", "multi"}
    assert {r["dataset"] for r in rows if r["breakdown"] == "summary"} == {"xquad-r[de,en]"}
    assert len(list((out / "runs").glob("*.trec"))) == 2 + 2 + 1
    assert (out / f"heatmap.{name}.png").is_file() and (out / "report.md").is_file()


def test_evaluate_command_with_an_external_run(lareqa_home, model_dir, tmp_path, capsys):
    external = tmp_path / "pyserini-run.txt"
    external.write_text("en-q000 Q0 en-a0-p0-s0 1 10.000000 Anserini\n")
    out = tmp_path / "out"
    code = main(["evaluate", "xquad-r/en", "--model", model_dir, "--run", str(external), "--out", str(out),
                 "--measures", "AP", "R@10", "--depth", "5", "--backend", "torch", "--precision", "fp32"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["system"] for r in rows} == {"st-bert", "pyserini-run"}
    ap = next(r for r in rows if r["system"] == "pyserini-run" and r["measure"] == "AP")
    assert ap["value"] == pytest.approx(1 / ap["queries"])  # one query answered at rank 1, all others count 0
    assert (out / "runs" / "xquad-r_en.st-bert.trec").is_file()
    assert "| xquad-r/en | st-bert |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["evaluate", "xquad-r/xx", "--bm25"], "has no language 'xx'"),
        (["evaluate", "msmarco", "--bm25"], "not an mlret dataset id"),
        (["evaluate", "xquad-r/en", "--model", "/no/such/model"], "no such folder"),
        (["evaluate", "xquad-r/en", "--measures", "MAPP", "--bm25"], "unknown measure 'MAPP'"),
        (["evaluate", "xquad-r/en", "xquad-r/de", "--run", "r.trec"], "exactly one DATASET_ID"),
        (["evaluate", "xquad-r/en"], "nothing to evaluate"),
        (["lareqa", "xquad-r", "--langs", "en,xx", "--bm25"], "no language(s) ['xx']"),
        (["lareqa", "xquad-r", "--settings", "mono,bi", "--bm25"], "--settings"),
    ],
)
def test_bad_input_fails_before_any_work(lareqa_home, argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_malformed_run_is_named_before_any_work(lareqa_home, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.trec"
    bad.write_text("en-q000 Q0 en-a0-p0-s0 1 10.0 tag\nen-q000 Q0 d2 two 9.0 tag\n")
    monkeypatch.setattr(swappable, "load_model", lambda *a, **k: pytest.fail("model loaded before the run was checked"))
    assert main(["evaluate", "xquad-r/en", "--model", "offline-minilm", "--run", str(bad)]) == 2
    assert f"{bad}:2: rank 'two'" in capsys.readouterr().err


def test_run_for_another_dataset_is_refused_before_any_work(lareqa_home, tmp_path, capsys, monkeypatch):
    foreign = tmp_path / "de-run.trec"
    foreign.write_text("de-q000 Q0 en-a0-p0-s0 1 10.0 tag\n")  # German queries, evaluated as xquad-r/en
    monkeypatch.setattr(swappable, "load_model", lambda *a, **k: pytest.fail("model loaded before the run was checked"))
    assert main(["evaluate", "xquad-r/en", "--model", "offline-minilm", "--run", str(foreign)]) == 2
    assert "none of its 1 query ids" in capsys.readouterr().err


def test_lareqa_without_any_model_reachable_runs_bm25_only(lareqa_home, monkeypatch, caplog):
    monkeypatch.setattr(specs, "in_local_cache", lambda repo: False)
    monkeypatch.setattr(specs, "hub_reachable", lambda repo=None, timeout=5.0: False)
    monkeypatch.setattr(specs, "offline_e5_path", lambda: None)
    monkeypatch.setattr(specs, "offline_minilm_path", lambda: None)
    from mlret_plugin.evaluation import systems

    built = []
    monkeypatch.setattr(systems, "_bm25", lambda k1, b: built.append((k1, b)) or "bm25-system")
    assert systems.build_systems([], default_if_none=True) == ["bm25-system"]
    assert built == [(0.9, 0.4)] and "BM25 ONLY" in caplog.text


def test_model_saved_by_the_plugin_is_evaluated_with_its_pattern(lareqa_home, tmp_path, capsys):
    import mlret_plugin

    model = mlret_plugin.load_model(str(tiny_model_dir("bert", tmp_path)), "local", window=4)
    model.save(str(tmp_path / "trained"))
    out = tmp_path / "out"
    assert main(["evaluate", "xquad-r/en", "--model", str(tmp_path / "trained"), "--no-cache", "--out", str(out)]) == 0
    from mlret_plugin import load_model

    # The same loader serves mlret evaluate / lareqa and DenseRetriever("path").
    assert load_model(str(tmp_path / "trained"))[0].attention_config.window == 4
