"""The attention grid end to end on fixture data with a tiny random BERT; resume; noise on candidates only."""
from __future__ import annotations

import json
import re

import pytest

from mlret_plugin.cli.main import main
from mlret_plugin.experiments.noise import NoiseSpec
from tiny_models import tiny_model_dir

VARIANTS = "dense,local:window=4,block_sparse:block=16:band=0:num_global=1"


@pytest.fixture
def tiny_model(tmp_path):
    return str(tiny_model_dir("bert", tmp_path))


def _cli(tiny_model, out, extra=()):
    return main(["experiment", "attention", "--collection", "xquad-r", "--model", tiny_model, "--variants", VARIANTS,
                 "--noise", "0,1", "--pool-sizes", "2,3", "--max-seq-length", "256", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """One zero-shot grid (3 variants x noise 0, 1 x pools 2, 3) through the typed API, shared by the tests
    below, each of which checks one concern of its outputs."""
    from lareqa_fixtures import seeded_home

    from mlret_plugin.experiments.attention import build_grid, run_attention_grid

    tmp = tmp_path_factory.mktemp("grid")
    with pytest.MonkeyPatch.context() as monkeypatch:
        seeded_home(tmp, monkeypatch)
        grid, model = build_grid("xquad-r", str(tiny_model_dir("bert", tmp)), VARIANTS.split(","), noise=[0, 1],
                                 pool_sizes=[2, 3], out=tmp / "out", max_seq_length=256)
        run_attention_grid(grid, model, progress=False)
    out = tmp / "out"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return out, rows, [r for r in rows if r["breakdown"] == "summary"], (out / "report.md").read_text()


def test_grid_rows_cover_every_cell_setting_and_language(grid_run):
    _, rows, summary, _ = grid_run
    assert len({(r["variant"], r["noise"], r["pool_size"]) for r in summary}) == 3 * 2 * 2
    assert {r["setting"] for r in summary} == {"mono", "cross", "multi"}
    assert {r["measure"] for r in summary if r["setting"] == "multi"} >= {"AP", "MaxRankDist"}
    langs = {r["qlang"] for r in rows if r["breakdown"] == "language" and r["pool_size"] == 3}
    assert len(langs) == 3 and "en" in langs  # per-language rows for every pool language


def test_degradation_is_variant_minus_dense_and_the_patterns_bite(grid_run):
    _, rows, summary, _ = grid_run
    for r in rows:
        if r["breakdown"] == "contrast":
            continue
        if r["variant"] == "dense":
            assert "delta" not in r
        else:
            assert r["delta"] == pytest.approx(r["value"] - r["dense_value"])
    # window 4 on ~100-token inputs really changes the numbers
    local = [r for r in summary if r["variant"].startswith("local") and r["measure"] == "AP" and r["noise"] == 1]
    assert any(abs(r["delta"]) > 1e-6 for r in local)


def test_noise_is_applied_at_about_the_requested_level(grid_run):
    _, _, summary, _ = grid_run
    noisy = [r for r in summary if r["noise"] == 1]
    assert all(r["achieved_noise"] and r["achieved_noise"] > 0.5 for r in noisy)
    assert all(r["achieved_noise"] in (None, 0) or r["noise"] == 1 for r in summary)


def test_outputs_report_and_plots_are_written(grid_run):
    out, _, _, report = grid_run
    for name in ("report.md", "degradation_vs_noise.png", "degradation_vs_pool_size.png", "cells.jsonl"):
        assert (out / name).stat().st_size > 0
    assert "# Attention experiment" in report and "local:window=4" in report and "Machine" in report
    assert "Δ" in report and "vs local:window=4" in report


def test_zero_shot_variants_are_tested_against_dense_with_holm(grid_run):
    _, rows, summary, _ = grid_run
    tested = [r for r in summary if r["p_value"] is not None]
    assert {r["variant"] for r in tested} == {r["variant"] for r in summary} - {"dense"}
    assert len(tested) == 2 * 2 * 2 * 4  # 2 variants x 2 noise x 2 pools x (Mono, Cross, Multi AP; MaxRankDist)
    assert all(r["seeds"] == [] and r["n_seeds"] == 1 for r in summary)  # zero-shot: no training seeds
    contrasts = [r for r in rows if r["breakdown"] == "contrast"]
    family = tested + contrasts  # Holm runs over every test of the report, the contrasts included
    smallest = min(r["p_value"] for r in family)
    assert min(r["p_holm"] for r in family) == pytest.approx(min(1.0, smallest * len(family)))


def test_block_sparse_and_local_are_contrasted_directly(grid_run):
    _, rows, summary, _ = grid_run
    contrasts = [r for r in rows if r["breakdown"] == "contrast"]
    assert len(contrasts) == 2 * 2 * 4 and all(r["p_value"] is not None for r in contrasts)
    assert {(r["variant"], r["baseline"]) for r in contrasts} == {("block_sparse:block=16:band=0:num_global=1",
                                                                   "local:window=4")}
    means = {(r["variant"], r["noise"], r["pool_size"], r["setting"], r["measure"]): r["value"] for r in summary}
    for r in contrasts:
        coord = (r["noise"], r["pool_size"], r["setting"], r["measure"])
        assert r["value"] == pytest.approx(means[(r["variant"], *coord)] - means[(r["baseline"], *coord)])
        assert r["test_delta"] == pytest.approx(r["value"], abs=1e-9)


def test_density_table_shows_what_each_pattern_keeps(grid_run):
    report = grid_run[3]
    section = report.split("## Attention density")[1].split("\n## ")[0]
    density = {line.split("|")[1].strip(): float(line.split("|")[6]) for line in section.splitlines()
               if line.startswith("| ") and not line.startswith("| variant")}
    assert density["dense"] == 1.0 and 0 < density["local:window=4"] < 1


def test_the_command_line_runs_the_same_grid(lareqa_home, tiny_model, tmp_path, capsys):
    assert _cli(tiny_model, tmp_path / "out") == 0
    assert "# Attention experiment" in capsys.readouterr().out
    assert (tmp_path / "out" / "results.jsonl").stat().st_size > 0


@pytest.mark.slow  # trains and evaluates a whole run: CI, not the fast loop
def test_rerun_resumes_from_finished_cells(lareqa_home, tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    from mlret_plugin.experiments import noisy_dense

    calls = []
    original = noisy_dense.NoisyDenseRetriever._encode

    def counting(self, inputs, what):
        calls.append(what)
        return original(self, inputs, what)

    monkeypatch.setattr(noisy_dense.NoisyDenseRetriever, "_encode", counting)
    assert _cli(tiny_model, out) == 0
    first = (out / "results.jsonl").read_text()
    assert calls
    # interrupted run: drop the last two finished cells, as if the process had been killed there
    lines = (out / "cells.jsonl").read_text().splitlines(keepends=True)
    (out / "cells.jsonl").write_text("".join(lines[:-2]))
    calls.clear()
    assert _cli(tiny_model, out) == 0
    # only the last variant's noise-1 cells ran again: candidates of 3 languages, queries of 3 languages
    assert len([c for c in calls if "candidates" in c]) == 3
    assert (out / "results.jsonl").read_text() == first  # the same numbers, deterministic
    calls.clear()
    assert _cli(tiny_model, out) == 0
    assert calls == []


def test_noise_changes_candidates_only(lareqa_home, tiny_model):
    from mlret_plugin.datasets import Subset
    from mlret_plugin.evaluation.measures import qrels_dict
    from mlret_plugin.experiments.attention import load_swappable
    from mlret_plugin.experiments.noisy_dense import NoisyDenseRetriever

    model = load_swappable(tiny_model, 256)
    clean = NoisyDenseRetriever(model, NoiseSpec(0), show_progress_bar=False)
    noisy = NoisyDenseRetriever(model, NoiseSpec(1.0), show_progress_bar=False)
    subset = Subset("xquad-r", ("en",), ("de",))
    a, b = clean.encode(subset), noisy.encode(subset)
    assert a.query_ids == b.query_ids and a.doc_ids == b.doc_ids
    assert (a.queries - b.queries).abs().max() < 1e-6  # queries untouched
    assert (a.docs - b.docs).abs().max() > 1e-3  # candidates changed
    assert noisy.noise_stats["de"].level >= 1.0
    qrels = qrels_dict(subset.load().qrels_iter())
    evaluator, _ = noisy.evaluate_full_depth(subset, ["AP"], qrels)
    assert set(evaluator.per_query()[next(iter(evaluator.per_query()))]) == set(qrels)  # every judged query, same qrels


@pytest.mark.parametrize("argv, message", [
    (["--variants", "dense,sliding:window=3"], "unknown attention kind"),
    (["--noise", "0,-0.5"], "noise level"),
    (["--pool-sizes", "2,12"], "exceeds the 11 languages"),
    (["--noise", "1", "--candidates", "sentence"], "needs candidates='context'"),
    (["--max-seq-length", "100000"], "position embeddings"),
    (["--finetune-steps", "2", "--finetune-batch-size", "64"], "distinct groups"),
])
def test_bad_input_fails_before_the_grid(lareqa_home, tiny_model, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code = main(["experiment", "attention", "--collection", "xquad-r", "--model", tiny_model, "--out", str(out), *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_model_that_cannot_swap_attention_is_rejected(tmp_path, capsys):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, StaticEmbedding

    from tiny_models import train_tiny_tokenizer

    static = StaticEmbedding(train_tiny_tokenizer(), embedding_dim=8)
    path = tmp_path / "static"
    SentenceTransformer(modules=[static]).save(str(path))
    code = main(["experiment", "attention", "--collection", "xquad-r", "--model", str(path), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "Transformer" in capsys.readouterr().err
    _ = Pooling


@pytest.mark.slow  # trains and evaluates a whole run: CI, not the fast loop
def test_finetune_after_swap(lareqa_home, tiny_model, tmp_path):
    """Two commands, one training seed each, share one --out: the cache keys on the seed and the second
    command's report joins both seeds (mean +- std, paired tests against dense)."""
    out = tmp_path / "ft"

    def command(seed: str) -> int:
        return main(["experiment", "attention", "--collection", "xquad-r", "--model", tiny_model,
                     "--variants", "dense,local:window=4", "--noise", "0", "--pool-sizes", "2", "--candidates", "sentence",
                     "--finetune-steps", "2", "--finetune-alpha", "0.5", "--finetune-batch-size", "4", "--seeds", seed,
                     "--out", str(out)])

    assert command("0") == 0
    first = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {tuple(r["seeds"]) for r in first} == {(0,)}
    assert command("1") == 0
    cells = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    assert len(cells) == 4  # (dense, local) x seeds 0, 1: the seed is part of the cell key
    assert sorted(c["params"]["finetune"]["seed"] for c in cells) == [0, 0, 1, 1]
    for cell in cells:
        assert cell["params"]["finetune"]["train"] == "mlqa-r"  # zero-shot default: the other collection
        assert cell["params"]["finetune"]["passages"] == "text+context"  # default: sentence with its paragraph
        assert cell["info"]["finetune"]["steps"] == 2
        assert {r["finetune_steps"] for r in cell["rows"]} == {2}
        assert (out / "per_query" / f"{cell['key']}.jsonl.gz").is_file()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    summary = [r for r in rows if r["breakdown"] == "summary"]
    assert {tuple(r["seeds"]) for r in summary} == {(0, 1)}
    per_seed = {}
    for cell in cells:
        for r in cell["rows"]:
            if r["breakdown"] == "summary":
                per_seed.setdefault((r["variant"], r["setting"], r["measure"]), []).append(r["value"])
    for r in summary:  # the reported value is the mean over the two seeds, std their sample std
        values = per_seed[(r["variant"], r["setting"], r["measure"])]
        assert r["value"] == pytest.approx(sum(values) / 2)
        assert r["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    tested = [r for r in summary if r["p_value"] is not None]
    assert {(r["variant"], r["setting"], r["measure"]) for r in tested} == {
        ("local:window=4", s, "AP") for s in ("mono", "cross", "multi")} | {("local:window=4", "multi", "MaxRankDist")}
    for r in tested:
        assert r["baseline"] == "dense" and r["test_delta"] == pytest.approx(r["delta"], abs=1e-9)
        assert r["p_value"] <= r["p_holm"] <= 1 and r["ci_low"] <= r["delta"] + 1e-12 <= r["ci_high"] + 2e-12
    report = (out / "report.md").read_text()
    assert "fine-tuned 2 steps after the swap on mlqa-r" in report and "training seeds 0, 1" in report
    assert "passages text+context" in report
    assert "±" in report and "Holm" in report
    assert all(cell["info"]["finetune"]["seconds"] > 0 for cell in cells)
    assert re.search(r"cell compute time [0-9.]+ min \(fine-tuning [0-9.]+ min\)", report)


def test_finetune_passages_set_the_training_text_and_the_cell_key(lareqa_home, tiny_model, tmp_path):
    from mlret_plugin.experiments.attention import build_grid

    def grid(passages: str):
        g, _ = build_grid("xquad-r", tiny_model, "dense", "0", "2", tmp_path / "o", candidates="sentence",
                          finetune_steps=2, finetune_batch_size=4, finetune_passages=passages)
        return g

    sentence, both = grid("text"), grid("text+context")
    short = set(sentence.train_data.with_format(None)["passage"])  # raw rows, before pair composition
    long = set(both.train_data.with_format(None)["passage"])
    assert len(short) == len(long) and all(any(p.startswith(s + " ") for p in long) for s in short)
    key = {g.finetune_passages: g.params(g.variants[0], 0.0, 2, 0) for g in (sentence, both)}
    assert key["text"] != key["text+context"] and not sentence.joins(key["text+context"])


def test_cli_passage_choices_match_the_training_loader():
    from mlret_plugin.cli.experiment import PASSAGE_FIELDS as cli_fields
    from mlret_plugin.training.data import PASSAGE_FIELDS

    assert cli_fields == PASSAGE_FIELDS


def test_seeds_need_finetuning(lareqa_home, tiny_model, tmp_path, capsys):
    code = main(["experiment", "attention", "--collection", "xquad-r", "--model", tiny_model, "--variants", "dense",
                 "--noise", "0", "--pool-sizes", "2", "--seeds", "0,1", "--out", str(tmp_path / "o")])
    assert code == 2 and "set finetune_steps" in capsys.readouterr().err
