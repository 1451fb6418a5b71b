"""The size x alpha grid on fixture data with a tiny random BERT: truncation, parameter counts, seeds, tests, resume."""
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
                 "--models", f"{model}:layers=1,{model}", "--alphas", "0,1", "--max-steps", "2", "--batch-size", "2",
                 "--learning-rate", "0.01",
                 "--seeds", "0,1", "--baseline", "1", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def ratio_run(tmp_path_factory):
    """One size x alpha grid (first 1 of 2 layers and all 2, untrained / alpha 0 / 1, seeds 0, 1) through the
    typed API, interrupted during its first training and then resumed; shared by the tests below."""
    from lareqa_fixtures import seeded_home

    from mlret_plugin.experiments.ratio import build_ratio_grid, model_spec, run_ratio_grid

    tmp = tmp_path_factory.mktemp("ratio")
    with pytest.MonkeyPatch.context() as monkeypatch:
        seeded_home(tmp, monkeypatch)
        model = str(tiny_model_dir("bert", tmp))

        def grid():
            return build_ratio_grid("mlqa-r", "xquad-r", [model_spec(model, layers=1), model], alphas=[0, 1],
                                    max_steps=2, out=tmp / "out", eval_langs=["en", "de"], seeds=[0, 1], baseline=1,
                                    batch_size=2, learning_rate=0.01)

        def interrupt(*a, **k):
            raise KeyboardInterrupt

        with monkeypatch.context() as m:  # Ctrl-C during the first training: the finished cell is reported
            m.setattr("mlret_plugin.experiments.finetune.finetune", interrupt)
            with pytest.raises(KeyboardInterrupt):
                run_ratio_grid(grid(), progress=False)
        interrupted = (tmp / "out" / "report.md").read_text()
        run_ratio_grid(grid(), progress=False)
    out = tmp / "out"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return out, rows, [r for r in rows if r["breakdown"] == "summary" and r["measure"] == "AP"], interrupted, model


def test_an_interrupted_grid_reports_its_finished_cells(ratio_run):
    out, _, _, interrupted, _ = ratio_run
    assert "Interrupted: 1 of 10 cells finished" in interrupted
    assert "Interrupted" not in (out / "report.md").read_text()


def test_every_model_alpha_and_seed_is_a_cell(ratio_run):
    out, _, summary, _, _ = ratio_run
    assert len({(r["model"], r["alpha"]) for r in summary}) == 2 * 3  # two sizes x (untrained, 0, 1)
    assert {tuple(r["seeds"]) for r in summary if r["alpha"] is not None} == {(0, 1)}
    assert {r["n_seeds"] for r in summary if r["alpha"] is not None} == {2}
    assert {tuple(r["seeds"]) for r in summary if r["alpha"] is None} == {()}
    seeds_of = {cell["params"]["seed"] for cell in map(json.loads, (out / "cells.jsonl").read_text().splitlines())}
    assert seeds_of == {None, 0, 1}
    assert {r["steps"] for r in summary if r["alpha"] is not None} == {2}
    assert {r["steps"] for r in summary if r["alpha"] is None} == {0}


def test_every_alpha_is_tested_against_the_baseline_alpha(ratio_run):
    _, _, summary, _, _ = ratio_run
    for r in summary:
        assert {"p_value", "p_holm", "ci_low", "ci_high", "n_queries", "seeds"} <= set(r)
        if r["alpha"] == 1.0:  # the baseline itself is not tested
            assert r["p_value"] is None and "delta" not in r
        else:
            assert r["baseline"] == "alpha 1" and 0 < r["p_value"] <= r["p_holm"] <= 1
            assert r["ci_low"] <= r["delta"] + 1e-12 and r["delta"] <= r["ci_high"] + 1e-12
            assert r["test_delta"] == pytest.approx(r["delta"], abs=1e-9)
            assert r["n_queries"] > 0


def test_one_alpha_per_command_is_tested_against_a_baseline_finished_by_another(ratio_run, lareqa_home, tmp_path):
    """The recipe example runs one alpha and seed per command, all sharing --out: --alphas 0 --baseline 1 is
    accepted once alpha 1's cells are finished there, and its report tests alpha 0 against them."""
    import shutil

    from mlret_plugin.experiments.ratio import build_ratio_grid, model_spec, run_ratio_grid

    out, model = tmp_path / "out", ratio_run[4]
    shutil.copytree(ratio_run[0], out)

    def grid(baseline):
        return build_ratio_grid("mlqa-r", "xquad-r", [model_spec(model, layers=1), model], alphas=[0],
                                max_steps=2, out=out, eval_langs=["en", "de"], seeds=[0, 1], baseline=baseline,
                                batch_size=2, learning_rate=0.01)

    with pytest.raises(ValueError, match="not among the alphas 0, nor finished in out"):
        grid(0.5)
    run_ratio_grid(grid(1), progress=False)  # every cell is cached: only the report is rewritten
    summary = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    tested = [r for r in summary if r["breakdown"] == "summary" and r["measure"] == "AP" and r["alpha"] == 0.0]
    assert tested and all(r["baseline"] == "alpha 1" and 0 < r["p_value"] <= 1 for r in tested)


def test_test_untrained_also_tests_every_trained_alpha_against_the_untrained_model(ratio_run, lareqa_home, tmp_path):
    import shutil

    from mlret_plugin.experiments.ratio import build_ratio_grid, model_spec, run_ratio_grid

    out, model = tmp_path / "out", ratio_run[4]
    shutil.copytree(ratio_run[0], out)
    grid = build_ratio_grid("mlqa-r", "xquad-r", [model_spec(model, layers=1), model], alphas=[0, 1], max_steps=2,
                            out=out, eval_langs=["en", "de"], seeds=[0, 1], baseline=1, batch_size=2,
                            learning_rate=0.01, test_untrained=True)
    run_ratio_grid(grid, progress=False)  # cached cells: the report only
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    summary = {(r["model"], r["alpha"], r["setting"]): r for r in rows
               if r["breakdown"] == "summary" and r["measure"] == "AP"}
    vs_untrained = [r for r in rows if r["breakdown"] == "contrast" and r["measure"] == "AP"]
    assert {(r["model"], r["alpha"]) for r in vs_untrained} == {(m, a) for m, a, _ in summary if a is not None}
    for r in vs_untrained:  # the difference of the seed means, tested against the untrained model
        expected = summary[(r["model"], r["alpha"], r["setting"])]["value"] - summary[(r["model"], None, r["setting"])]["value"]
        assert r["baseline"] == "untrained" and r["value"] == pytest.approx(expected, abs=1e-9)
        assert r["test_delta"] == pytest.approx(expected, abs=1e-9) and 0 < r["p_value"] <= r["p_holm"] <= 1
    assert all(r["baseline"] == "alpha 1" for r in rows if r["breakdown"] == "summary" and r["alpha"] == 0.0
               and r["p_value"] is not None)  # the alpha baseline's tests stay
    report = (out / "report.md").read_text()
    assert "and each trained alpha against the untrained model" in report and "alpha 1 vs untrained" in report


def test_sizes_are_truncations_with_their_parameter_counts(ratio_run):
    _, rows, summary, _, _ = ratio_run
    params = {r["model"]: r["params"] for r in rows}
    layers = {r["model"]: r["layers"] for r in rows}
    small, full = sorted(params, key=params.get)
    assert "first 1 layers" in small and layers[small] == 1 and layers[full] == 2
    assert params[small] < params[full]
    by = {(r["model"], r["alpha"], r["setting"]): r["value"] for r in summary}
    assert any(by[(full, a, "multi")] != by[(full, None, "multi")] for a in (0.0, 1.0))  # training changed it


def test_report_and_plot_are_written(ratio_run):
    out = ratio_run[0]
    assert (out / "map_vs_alpha.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "untrained" in report and "Machine" in report
    assert "Holm" in report and "## Paired tests" in report and "±" in report


def test_a_rerun_of_the_command_reuses_every_cell(ratio_run, lareqa_home, monkeypatch):
    out, _, _, _, model = ratio_run

    def boom(*a, **k):
        raise AssertionError("a finished cell was trained or evaluated again")

    monkeypatch.setattr("mlret_plugin.evaluation.lareqa.run_lareqa", boom)
    monkeypatch.setattr("mlret_plugin.experiments.finetune.finetune", boom)
    assert _cli(model, out) == 0  # the command line builds the same cells: every one is cached


def test_the_report_names_every_machine_its_cells_ran_on(ratio_run, lareqa_home, monkeypatch, tmp_path):
    import shutil

    from mlret_plugin.encoding.backends import describe_machine

    out, _, _, _, model = ratio_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    cells = [json.loads(line) for line in (copy / "cells.jsonl").read_text().splitlines()]
    assert {c["info"]["machine"] for c in cells} == {describe_machine()}  # each cell records where it ran
    cells[0]["info"]["machine"] = "another box (bf16 hardware: AMX)"  # as if restored from an archive
    (copy / "cells.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cells))
    monkeypatch.setattr("mlret_plugin.evaluation.lareqa.run_lareqa", None)  # every cell is cached: nothing runs
    assert _cli(model, copy) == 0
    machine_line = next(line for line in (copy / "report.md").read_text().splitlines() if line.startswith("- Machine"))
    assert describe_machine() in machine_line and "cells also from: another box (bf16 hardware: AMX)" in machine_line


def test_describe_machine_names_the_bf16_hardware(monkeypatch):
    from mlret_plugin.encoding import backends

    monkeypatch.setattr(backends, "cpu_flags", lambda: {"avx512f", "avx512_bf16", "amx_bf16"})
    assert "(bf16 hardware: AMX, AVX512_BF16)" in backends.describe_machine()
    monkeypatch.setattr(backends, "cpu_flags", lambda: {"avx2"})
    assert "(bf16 hardware: none)" in backends.describe_machine()


@pytest.mark.parametrize("argv, message", [
    (["--alphas", "0,1.5"], "in [0, 1]"),
    (["--max-steps", "0"], "max_steps 0"),
    (["--models", "{m}:layers=9"], "the model has 2"),
    (["--models", "{m}:depth=1"], "unknown option"),
    (["--train", "nope-r"], "not an mlret dataset id"),
    (["--eval-langs", "en,xx"], "no language(s) ['xx']"),
    (["--batch-size", "64"], "distinct groups"),
    (["--baseline", "0.5"], "not among the alphas"),
    (["--seeds", "0,0"], "distinct integers"),
    (["--train", "x.jsonl", "--holdout-articles", "2"], "needs train to be a dataset id"),
    (["--eval-langs", "th", "--holdout-articles", "1"], "none is a language of mlqa-r"),
    (["--scale", "-1"], "recipe scale=-1.0"),
])
def test_bad_input_fails_before_training(lareqa_home, tiny_model, tmp_path, capsys, argv, message):
    base = {"--train": "mlqa-r", "--alphas": "0,1", "--max-steps": "2", "--models": "{m}", "--eval-langs": "en,de",
            "--batch-size": "2", "--baseline": "1"}
    base.update(dict(zip(argv[::2], argv[1::2])))
    args = ["experiment", "ratio", "--eval", "xquad-r", "--out", str(tmp_path / "o")]
    for k, v in base.items():
        args += [k, v.format(m=tiny_model)]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_max_steps_is_required_only_when_something_trains(lareqa_home, tiny_model, tmp_path, capsys):
    args = ["experiment", "ratio", "--train", "mlqa-r", "--eval", "xquad-r", "--eval-langs", "en,de",
            "--models", tiny_model, "--alphas", "0.5", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "--max-steps is required" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main([*args, "--only-untrained"]) == 0  # the untrained cell trains nothing
    cells = [json.loads(line) for line in (tmp_path / "o" / "cells.jsonl").read_text().splitlines()]
    assert [c["params"]["alpha"] for c in cells] == [None]


def test_held_out_articles_are_a_second_evaluation_with_its_own_tests(lareqa_home, tiny_model, tmp_path):
    """--holdout-articles: training excludes the articles, every cell is also evaluated on their questions;
    --only-untrained is the starting point alone, and a later command sharing --out joins it."""
    out = tmp_path / "held"
    base = ["experiment", "ratio", "--train", "mlqa-r", "--eval", "xquad-r", "--eval-langs", "en,de", "--models", tiny_model,
            "--max-steps", "2", "--batch-size", "2", "--learning-rate", "0.01", "--holdout-articles", "1",
            "--baseline", "untrained", "--out", str(out)]
    assert main([*base, "--alphas", "1", "--only-untrained"]) == 0
    cells = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    assert [c["params"]["alpha"] for c in cells] == [None]
    untrained_only = (out / "report.md").read_text()  # nothing compared yet: one sentence, no empty tests table
    assert "No paired tests yet" in untrained_only and "## Paired tests" not in untrained_only
    assert "Training: none yet" in untrained_only and "steps of hybrid batches" not in untrained_only
    assert main([*base, "--alphas", "1", "--seeds", "0"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    summary = [r for r in rows if r["breakdown"] == "summary" and r["measure"] == "AP"]
    assert {r["eval"] for r in summary} == {"xquad-r", "mlqa-r held-out"}
    held = [r for r in rows if r["eval"] == "mlqa-r held-out" and r["breakdown"] in ("language", "pool")]
    assert held and all(r["query_groups"] > 0 for r in held)
    # --eval-langs restricts the held-out evaluation too, and keys its cells
    assert {r["qlang"] for r in rows if r["eval"] == "mlqa-r held-out" and r["breakdown"] == "language"} == {"en", "de"}
    assert all(c["params"]["holdout"]["langs"] == ["en", "de"] for c in cells)
    tested = {(r["eval"], r["setting"]) for r in summary if r["p_value"] is not None}
    assert ("mlqa-r held-out", "multi") in tested and ("xquad-r", "multi") in tested
    held_out = cells[0]["params"]["holdout"]["articles"]
    assert len(held_out) == 1
    from mlret_plugin.experiments.finetune import load_train_data
    from mlret_plugin.training.data import held_out_groups, row_table

    groups = held_out_groups("mlqa-r", set(held_out))
    trained_on = set(row_table(load_train_data("mlqa-r", exclude_articles=set(held_out)))[0])
    assert groups and not groups & trained_on  # the evaluated questions were never trained on
    report = (out / "report.md").read_text()
    assert "on mlqa-r held-out" in report and "held out of training" in report
