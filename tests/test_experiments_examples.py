"""The offline-e5 example commands: every part is a valid `mlret experiment` command line (parsed, not run)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import sys

from mlret_plugin.cli.main import build_parser

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["e5_attention", "e5_ratio", "e5_paper_claim", "e5_hybrid_recipe"])
def test_every_part_parses_and_parts_of_a_question_share_one_out(name, capsys):
    from e5_parts import command

    module = _load(name)
    parser = build_parser()
    names = [p.name for p in module.PARTS]
    assert len(set(names)) == len(names)
    for part in module.PARTS:
        argv = command(part, "offline-e5", "OUT")
        args = parser.parse_args(argv)  # argparse exits (SystemExit) on an unknown or malformed option
        assert args.out.startswith("OUT/") and "offline-e5" in " ".join(argv)
        if getattr(args, "finetune_steps", 0) or getattr(args, "experiment", "") == "ratio":
            seeds = args.seeds
            assert seeds is None or len(seeds) == 1 or args.only_untrained  # one seed per part
    assert module.run_parts(module.PARTS, "x", ["--list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(module.PARTS)


def test_training_parts_cover_three_seeds_per_cell():
    from e5_parts import command

    parser = build_parser()
    for name in ("e5_ratio", "e5_paper_claim"):
        seeds = {tuple(parser.parse_args(command(p, "m", "OUT")).seeds) for p in _load(name).PARTS
                 if not parser.parse_args(command(p, "m", "OUT")).only_untrained}
        assert seeds == {(0,), (1,), (2,)}


def test_parts_run_in_the_order_given(monkeypatch, capsys):
    import e5_parts

    module = _load("e5_hybrid_recipe")
    ran = []
    monkeypatch.setattr("mlret_plugin.cli.main.main", lambda argv: ran.append(argv[argv.index("--out") + 1]) or 0)
    names = ["search-b64-wise", "search-untrained", "search-b64-wise"]
    assert e5_parts.run_parts(module.PARTS, "x", [f"--part={n}" for n in names] + ["--out", "O"]) == 0
    order = [line.split(":")[0].removeprefix("part ") for line in capsys.readouterr().err.splitlines()]
    assert order == ["search-b64-wise", "search-untrained"] and len(ran) == 2  # as given, each once


def test_a_chain_of_parts_stops_at_its_first_failure_and_names_what_it_skipped(monkeypatch, capsys):
    import e5_parts

    module = _load("e5_hybrid_recipe")
    ran = []
    monkeypatch.setattr("mlret_plugin.cli.main.main", lambda argv: ran.append(argv) or (2 if len(ran) == 2 else 0))
    names = ["final-a0.5-s0", "final-a0-s0", "final-a1-s0"]
    assert e5_parts.run_parts(module.PARTS, "x", [f"--part={n}" for n in names] + ["--out", "O"]) == 2
    err = capsys.readouterr().err
    assert len(ran) == 2 and "part final-a0-s0: FAILED (exit 2); not run: ['final-a1-s0']" in err
    assert "final-a0-s0: 0 s wall" not in err  # a failure is not reported as a finished part


def test_the_recipe_summary_chooses_the_recipe_with_the_largest_worst_delta(tmp_path, capsys):
    import json

    module = _load("e5_hybrid_recipe")
    folder = tmp_path / "hybrid-recipe" / "search"
    folder.mkdir(parents=True)

    def cell(params, mono, cross, multi):
        rows = [{"breakdown": "summary", "setting": s, "measure": "AP", "value": v}
                for s, v in (("mono", mono), ("cross", cross), ("multi", multi))]
        rows.append({"breakdown": "summary", "setting": "multi", "measure": "MaxRankDist", "value": 500.0})
        return {"params": params, "rows": rows, "info": {"train_seconds": 60, "eval_seconds": 60}}

    trained = {"alpha": 0.5, "batch_size": 64, "max_steps": 100, "lr": 2e-5}
    cells = [cell({"alpha": None}, .60, .40, .30),
             cell({**trained, "recipe": {"loss": "cached-mnrl"}}, .58, .55, .50),  # big gains, loses Mono
             cell({**trained, "wise": 0.5}, .61, .45, .35)]  # small gains everywhere
    (folder / "cells.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cells))
    assert module.summary(str(tmp_path)) == 0
    text = (folder / "summary.md").read_text()
    assert "Chosen: **batch 64, 100 steps, lr 2e-05, WiSE 0.5**" in text
    assert "| -0.0200 |" in text  # the cached-mnrl recipe's worst Δ (Mono)


def test_the_final_table_turns_alpha_tests_into_hybrid_differences_and_checks_the_goal(tmp_path, capsys):
    import json

    module = _load("e5_hybrid_recipe")
    folder = tmp_path / "hybrid-recipe" / "final"
    folder.mkdir(parents=True)

    def row(alpha, setting, measure, value, breakdown="summary", test=None):
        r = {"eval": "xquad-r", "alpha": alpha, "setting": setting, "measure": measure, "value": value,
             "breakdown": breakdown, "std": 0.01, "n_seeds": 3, "p_value": None}
        if test:  # (Δ of the row's system minus its baseline, CI low, CI high, Holm p)
            r.update(zip(("test_delta", "ci_low", "ci_high", "p_holm"), test), p_value=test[3])
        return r

    rows = [row(None, "mono", "AP", .80), row(0.5, "mono", "AP", .81), row(1.0, "mono", "AP", .82, test=(.01, .005, .015, .01)),
            row(0.5, "mono", "AP", .01, "contrast", (.01, .004, .016, .02)),
            row(None, "multi", "AP", .30), row(0.5, "multi", "AP", .55), row(0.0, "multi", "AP", .58, test=(.03, .02, .04, .001))]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert module.final(str(tmp_path)) == 0
    lines = {line.split(" | ")[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("| xquad-r")}
    assert set(lines) == {"mono", "multi"}  # a measure no alpha has is left out
    # hybrid - X-X = -(X-X - hybrid), CI flipped; hybrid - untrained from the contrast row; the goal judged
    assert "-0.0100* [-0.0150, -0.0050], 0.01" in lines["mono"] and "+0.0100* [+0.0040, +0.0160], 0.02" in lines["mono"]
    assert lines["mono"].endswith(">= untrained: yes |")
    assert "-0.0300* [-0.0400, -0.0200], 0.001" in lines["multi"] and lines["multi"].endswith(">= 0.6: no |")


def test_the_final_grid_is_archived_and_restored_through_the_example(tmp_path, capsys):
    from mlret_plugin.experiments.cache import CellCache, cell_key
    from mlret_plugin.experiments.significance import save_per_query

    module = _load("e5_hybrid_recipe")
    folder = tmp_path / "run" / "hybrid-recipe" / "final"
    params = {"experiment": "ratio", "alpha": 0.5, "seed": 2}
    save_per_query(folder, cell_key(params), [{"setting": "mono", "measure": "AP", "values": {"q": 0.5}}])
    CellCache(folder / "cells.jsonl").put(params, [{"value": 0.5}])
    archive = tmp_path / "archive"
    assert module.keep(str(tmp_path / "run"), restore=False, archive=str(archive)) == 0
    assert module.keep(str(tmp_path / "next"), restore=True, archive=str(archive)) == 0
    assert "restored 1 cell(s)" in capsys.readouterr().out
    assert CellCache(tmp_path / "next" / "hybrid-recipe" / "final" / "cells.jsonl").get(params)["rows"] == [{"value": 0.5}]
