"""`mlret train` on fixture data with a tiny model: trains, saves, evaluates, resumes; bad arguments fail fast."""
from __future__ import annotations

import json

import pytest

from mlret_plugin.cli.main import main
from tiny_models import tiny_model_dir


@pytest.fixture
def tiny_dir(tmp_path):
    return tiny_model_dir("bert", tmp_path)


def test_train_saves_model_and_writes_results(lareqa_home, tiny_dir, tmp_path, caplog):
    out = tmp_path / "run"
    args = ["train", "--train", "mlqa-r", "--eval", "xquad-r", "--eval-langs", "de,en", "--model", str(tiny_dir),
            "--alpha", "0.5", "--max-steps", "2", "--batch-size", "2", "--save-steps", "1", "--out", str(out)]
    assert main(args) == 0
    assert (out / "model" / "modules.json").is_file() and not (out / "model.tmp").exists()
    rows = [json.loads(line) for line in (out / "eval" / "results.jsonl").read_text().splitlines()]
    summary = {(r["setting"], r["measure"]) for r in rows if r["breakdown"] == "summary"}
    assert {("mono", "AP"), ("cross", "AP"), ("multi", "AP"), ("multi", "MaxRankDist")} <= summary
    assert {r["qlang"] for r in rows if r["breakdown"] == "language"} == {"de", "en"}
    # Resume continues from the latest checkpoint up to the new step budget.
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    assert main(args[:-2] + ["--max-steps", "3", "--no-eval", "--resume", "--out", str(out)]) == 0
    assert "resuming from" in caplog.text and "checkpoint-2" in caplog.text
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3


def test_train_from_jsonl(lareqa_home, tiny_dir, tmp_path):
    rows = [{"group_id": f"g{g}", "lang": lang, "query": f"{lang} q {g}", "passage": f"{lang} p {g}"}
            for g in range(6) for lang in ("de", "en")]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert main(["train", "--train", str(path), "--no-eval", "--model", str(tiny_dir), "--max-steps", "1",
                 "--batch-size", "3", "--out", str(out)]) == 0
    assert (out / "model" / "modules.json").is_file()


@pytest.mark.parametrize("extra,message", [
    (["--train", "mlqa-r", "--eval", "mlqa-r"], "zero-shot"),
    (["--train", "mlqa-r", "--eval", "xquad-r", "--alpha", "1.5"], "--alpha 1.5"),
    (["--train", "mlqa-r"], "--eval DATASET_ID is required"),
    (["--train", "nope.jsonl", "--no-eval"], "nope.jsonl: no such file"),
    (["--train", "mlqa-r", "--eval", "xquad-r", "--eval-langs", "de,xx"], "no language(s) ['xx']"),
    (["--train", "mlqa-r", "--eval", "mlqa-r", "--holdout-articles", "1"], "cannot yet restrict"),
    (["--train", "mlqa-r", "--no-eval", "--attention-option", "window=4"], "needs --attention"),
    (["--train", "mlqa-r", "--no-eval", "--resume"], "no checkpoint-* folder"),
])
def test_bad_arguments_fail_before_training(lareqa_home, tmp_path, capsys, extra, message):
    code = main(["train", *extra, "--model", "offline-minilm", "--max-steps", "1", "--out", str(tmp_path / "o")])
    assert code == 2
    assert message in capsys.readouterr().err


def test_holdout_articles_are_not_trained_on(lareqa_home, tiny_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--train", "xquad-r", "--no-eval", "--holdout-articles", "1", "--model", str(tiny_dir),
                 "--max-steps", "1", "--batch-size", "2", "--out", str(out)]) == 0
    held = json.loads((out / "holdout.json").read_text())
    assert held["dataset"] == "xquad-r" and len(held["articles"]) == 1
