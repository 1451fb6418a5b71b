"""The size x alpha grid on fixture data with a tiny random BERT: truncation, parameter counts, resume."""
from __future__ import annotations

import json

import pytest

from mlret_plugin.cli.main import main
from tiny_models import tiny_model_dir


@pytest.fixture
def tiny_model(tmp_path):
    return str(tiny_model_dir("bert", tmp_path))


def _cli(model, out, extra=()):
    return main(["experiment", "ratio", "--train", "mlqa-r", "--eval", "xquad-r", "--eval-langs", "en,de",
                 "--models", f"{model}:layers=1,{model}", "--alphas", "0,1", "--max-steps", "2", "--batch-size", "2", "--learning-rate", "0.01",
                 "--out", str(out), *extra])


def test_ratio_grid_rows_params_report_and_resume(lareqa_home, tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # Ctrl-C during the first training: the finished cell is reported
        m.setattr("mlret_plugin.experiments.finetune.finetune", interrupt)
        with pytest.raises(KeyboardInterrupt):
            _cli(tiny_model, out)
    assert "Interrupted: 1 of 6 cells finished" in (out / "report.md").read_text()
    assert _cli(tiny_model, out) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    summary = [r for r in rows if r["breakdown"] == "summary" and r["measure"] == "AP"]
    cells = {(r["model"], r["alpha"]) for r in summary}
    assert len(cells) == 2 * 3  # two sizes x (untrained, 0, 1)
    params = {r["model"]: r["params"] for r in rows}
    layers = {r["model"]: r["layers"] for r in rows}
    small, full = sorted(params, key=params.get)
    assert "first 1 layers" in small and layers[small] == 1 and layers[full] == 2
    assert params[small] < params[full]
    assert {r["steps"] for r in summary if r["alpha"] is not None} == {2}
    assert {r["steps"] for r in summary if r["alpha"] is None} == {0}
    # training changed the model: the trained cells differ from the untrained starting point
    by = {(r["model"], r["alpha"], r["setting"]): r["value"] for r in summary}
    assert any(by[(full, a, "multi")] != by[(full, None, "multi")] for a in (0.0, 1.0))
    assert (out / "map_vs_alpha.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "untrained" in report and "Machine" in report and "Interrupted" not in report

    def boom(*a, **k):
        raise AssertionError("a finished cell was trained or evaluated again")

    monkeypatch.setattr("mlret_plugin.evaluation.lareqa.run_lareqa", boom)
    monkeypatch.setattr("mlret_plugin.experiments.finetune.finetune", boom)
    assert _cli(tiny_model, out) == 0  # every cell cached


@pytest.mark.parametrize("argv, message", [
    (["--alphas", "0,1.5"], "in [0, 1]"),
    (["--max-steps", "0"], "--max-steps"),
    (["--models", "{m}:layers=9"], "the model has 2"),
    (["--models", "{m}:depth=1"], "unknown option"),
    (["--train", "nope-r"], "not an mlret dataset id"),
    (["--eval-langs", "en,xx"], "no language(s) ['xx']"),
    (["--batch-size", "64"], "distinct groups"),
])
def test_bad_input_fails_before_training(lareqa_home, tiny_model, tmp_path, capsys, argv, message):
    base = {"--train": "mlqa-r", "--alphas": "0,1", "--max-steps": "2", "--models": "{m}", "--eval-langs": "en,de",
            "--batch-size": "2"}
    base.update(dict(zip(argv[::2], argv[1::2])))
    args = ["experiment", "ratio", "--eval", "xquad-r", "--out", str(tmp_path / "o")]
    for k, v in base.items():
        args += [k, v.format(m=tiny_model)]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
