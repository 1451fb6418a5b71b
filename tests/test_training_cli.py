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
    (["--train", "mlqa-r", "--eval", "mlqa-r"], "--holdout-articles K"),
    (["--train", "mlqa-r", "--no-eval", "--attention-option", "window=4"], "needs --attention"),
    (["--train", "mlqa-r", "--no-eval", "--resume"], "no checkpoint-* folder"),
    (["--train", "mlqa-r", "--no-eval", "--attention", "local"], "needs window="),
    (["--train", "mlqa-r", "--no-eval", "--attention", "block_sparse", "--attention-option", "block=48"], "block"),
    (["--train", "mlqa-r", "--no-eval", "--attention", "local", "--attention-option", "window=4",
      "--attention-option", "backend=cuda"], "backend=cuda: expected one of"),
    (["--train", "mlqa-r", "--no-eval", "--scale", "0"], "--scale 0.0: expected > 0"),
    (["--train", "mlqa-r", "--no-eval", "--wise-ft", "1.5"], "--wise-ft 1.5: expected a weight"),
])
def test_bad_arguments_fail_before_training(lareqa_home, tmp_path, capsys, extra, message):
    code = main(["train", *extra, "--model", "offline-minilm", "--max-steps", "1", "--out", str(tmp_path / "o")])
    assert code == 2
    assert message in capsys.readouterr().err


def test_holdout_articles_are_not_trained_on(lareqa_home, tiny_dir, tmp_path, monkeypatch):
    import ir_datasets

    import mlret_plugin.training.run as run_module
    from mlret_plugin.datasets import group_id

    seen = {}
    real_train = run_module.train_hybrid

    def recording_train(model, data, out, **kwargs):
        seen["groups"] = set(data.with_format(None)["group_id"])  # raw rows, before pair composition
        return real_train(model, data, out, **kwargs)

    monkeypatch.setattr(run_module, "train_hybrid", recording_train)
    out = tmp_path / "run"
    assert main(["train", "--train", "xquad-r", "--no-eval", "--holdout-articles", "1", "--model", str(tiny_dir),
                 "--max-steps", "1", "--batch-size", "2", "--out", str(out)]) == 0
    held = json.loads((out / "holdout.json").read_text())
    assert held["dataset"] == "xquad-r" and len(held["articles"]) == 1
    article_of = {group_id(q.query_id): int(q.doc_id.split("-")[1][1:])  # doc ids: {lang}-a{article}-p-s
                  for q in ir_datasets.load("xquad-r/en").qrels_iter()}
    held_groups = {g for g, a in article_of.items() if a in held["articles"]}
    assert held_groups and seen["groups"] and not (seen["groups"] & held_groups)
    assert set(article_of) - held_groups <= seen["groups"]  # everything else is trained on


def test_holdout_articles_are_evaluated_within_the_collection(lareqa_home, tiny_dir, tmp_path):
    import ir_datasets

    from mlret_plugin.datasets import group_id, pool
    from mlret_plugin.evaluation.runs import run_path

    out = tmp_path / "run"
    assert main(["train", "--train", "mlqa-r", "--eval", "mlqa-r", "--eval-langs", "de,en", "--holdout-articles", "1",
                 "--model", str(tiny_dir), "--max-steps", "1", "--batch-size", "2", "--out", str(out)]) == 0
    held = json.loads((out / "holdout.json").read_text())["articles"]
    article_of = {group_id(q.query_id): int(q.doc_id.split("-")[1][1:]) for q in ir_datasets.load("mlqa-r/en").qrels_iter()}
    held_groups = {g for g, a in article_of.items() if a in held}
    assert held_groups and held_groups != set(article_of)
    rows = [json.loads(line) for line in (out / "eval" / "results.jsonl").read_text().splitlines()]
    # each subset judges exactly its held-out questions, against every candidate of the language(s)
    for dataset_id in ("mlqa-r/en", "mlqa-r/de-en", "mlqa-r[de,en]"):
        ds = pool("mlqa-r", ["de", "en"]).load() if "[" in dataset_id else ir_datasets.load(dataset_id)
        expected = {q.query_id for q in ds.qrels_iter() if group_id(q.query_id) in held_groups}
        judged = {r["queries"] for r in rows if r["dataset"] == dataset_id and r["measure"] == "AP"
                  and r["breakdown"] in ("language", "pair", "pool")}
        assert judged == {len(expected)}, dataset_id
    assert all(r["query_groups"] == len(held_groups) for r in rows)
    run_queries = {line.split()[0] for line in run_path(out / "eval", "hybrid-alpha0.5", "mlqa-r/en").read_text().splitlines()}
    assert run_queries and {group_id(q) for q in run_queries} <= held_groups
    assert "held-out groups" in (out / "eval" / "report.md").read_text()


def test_train_with_attention_saves_the_pattern(lareqa_home, tiny_dir, tmp_path):
    import mlret_plugin

    out = tmp_path / "run"
    assert main(["train", "--train", "mlqa-r", "--no-eval", "--model", str(tiny_dir), "--attention", "local",
                 "--attention-option", "window=2", "--max-steps", "1", "--batch-size", "2", "--out", str(out)]) == 0
    config = mlret_plugin.load_model(out / "model")[0].attention_config
    assert (config.kind, config.window) == ("local", 2)


@pytest.mark.slow  # trains and evaluates a whole run: CI, not the fast loop
def test_train_eval_uses_the_embedding_cache_unless_no_cache(lareqa_home, tiny_dir, tmp_path):
    from mlret_plugin.encoding import default_cache_dir

    def entries() -> int:
        return sum(1 for _ in default_cache_dir().rglob("*.emb"))

    args = ["train", "--train", "mlqa-r", "--eval", "xquad-r", "--eval-langs", "en", "--model", str(tiny_dir),
            "--max-steps", "1", "--batch-size", "2"]
    assert main(args + ["--no-cache", "--out", str(tmp_path / "a")]) == 0
    assert entries() == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    assert entries() > 0


@pytest.mark.slow  # trains and evaluates a whole run: CI, not the fast loop
def test_only_rank_0_evaluates_under_a_launcher(lareqa_home, tiny_dir, tmp_path, monkeypatch, capsys):
    """torchrun / accelerate run `mlret train` once per rank; ranks other than 0 train, then skip the evaluation.
    (The rank itself comes from accelerate's PartialState, checked under a real torchrun in test_training_ddp.)"""
    from mlret_plugin.training import run

    args = ["train", "--train", "mlqa-r", "--eval", "xquad-r", "--eval-langs", "en", "--model", str(tiny_dir),
            "--max-steps", "1", "--batch-size", "2"]
    monkeypatch.setattr(run, "process_rank", lambda: 1)
    assert main(args + ["--out", str(tmp_path / "r1")]) == 0
    assert "rank 1 is done; the evaluation runs on rank 0 only" in capsys.readouterr().err
    assert (tmp_path / "r1" / "model" / "modules.json").is_file() and not (tmp_path / "r1" / "eval").exists()
    monkeypatch.setattr(run, "process_rank", lambda: 0)
    assert main(args + ["--out", str(tmp_path / "r0")]) == 0
    assert (tmp_path / "r0" / "eval" / "results.jsonl").is_file()
