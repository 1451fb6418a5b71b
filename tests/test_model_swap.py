"""Swappable attention inside sentence-transformers on tiny random BERT / XLM-R / ModernBERT models."""
from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sentence_transformers import SentenceTransformer  # noqa: E402

from mlret_plugin import AttentionSwapTransformer, load_model, set_attention  # noqa: E402
from mlret_plugin.model import check_swappable  # noqa: E402
from tiny_models import ARCHS, tiny_model_dir, tiny_sentence_transformer  # noqa: E402

# Lengths differ so batches carry padding; the longest is ~120 tokens.
TEXTS = [
    "Where was the treaty signed?",
    "Der schnelle braune Fuchs springt über den faulen Hund. " * 6,
    "The river flows through the capital city before it reaches the sea. " * 9,
    "Быстрая коричневая лиса",
]
TOL = 1e-5


def encode(model, texts=TEXTS):
    return model.encode(texts, convert_to_tensor=True, batch_size=len(texts))


@pytest.fixture(params=ARCHS)
def tiny(request, tmp_path):
    return tiny_sentence_transformer(request.param, tmp_path)


def test_wide_window_equals_dense_narrow_changes_swap_back_restores(tiny):
    dense = encode(tiny)
    longest = max(len(tiny.tokenize([t])["input_ids"][0]) for t in TEXTS)
    set_attention(tiny, "local", window=longest)
    assert isinstance(tiny[0], AttentionSwapTransformer)
    assert (encode(tiny) - dense).abs().max().item() <= TOL
    set_attention(tiny, "local", window=3, block=16)
    narrow = encode(tiny)
    assert (narrow[1:3] - dense[1:3]).abs().max().item() > 1e-3, "a 3-token window must change long texts"
    set_attention(tiny, "block_sparse", block=16, band=0, num_global=1)
    assert (encode(tiny)[1:3] - dense[1:3]).abs().max().item() > 1e-3
    set_attention(tiny, "dense")
    assert torch.equal(encode(tiny), dense)


def test_padding_is_not_ignored(tiny):
    """A text encoded alone equals the same text inside a padded batch (local pattern)."""
    set_attention(tiny, "local", window=5, block=16)
    batch = encode(tiny)
    for i, text in enumerate(TEXTS):
        assert (encode(tiny, [text])[0] - batch[i]).abs().max().item() <= TOL


def test_save_load_round_trip_without_trust_remote_code(tiny, tmp_path):
    set_attention(tiny, "local", window=4, num_global=1, block=16)
    expected = encode(tiny)
    out = tmp_path / "saved"
    tiny.save(str(out))
    saved = json.loads((out / "sentence_bert_config.json").read_text())
    assert saved["attention"]["kind"] == "local" and saved["attention"]["window"] == 4
    assert "mlret" not in (out / "config.json").read_text()  # the HF folder stays a plain transformers model
    loaded = load_model(out)
    assert isinstance(loaded[0], AttentionSwapTransformer)
    assert loaded[0].attention_config == tiny[0].attention_config
    assert (encode(loaded) - expected).abs().max().item() <= TOL
    # Overriding the saved pattern at load time.
    assert load_model(out, "dense")[0].attention_config.kind == "dense"
    # The plain sentence-transformers route needs trust_remote_code (it imports the plugin class).
    with pytest.raises(Exception, match="trust_remote_code"):
        SentenceTransformer(str(out))
    plain = SentenceTransformer(str(out), trust_remote_code=True)
    assert (encode(plain) - expected).abs().max().item() <= TOL


def test_missing_loading_hook_names_the_trust_remote_code_route(tiny, tmp_path, monkeypatch):
    set_attention(tiny, "local", window=4, block=16)
    tiny.save(str(tmp_path / "saved"))
    monkeypatch.setattr(SentenceTransformer, "_load_with_module_classes", None, raising=False)
    with pytest.raises(RuntimeError, match="trust_remote_code=True"):
        load_model(tmp_path / "saved")


def test_load_model_from_plain_st_and_hf_dirs(tmp_path):
    st_dir = tiny_model_dir("bert", tmp_path)
    dense = encode(SentenceTransformer(str(st_dir)))
    model = load_model(st_dir, "local", window=512)
    assert (encode(model) - dense).abs().max().item() <= TOL
    assert load_model(st_dir)[0].attention_config.kind == "dense"
    hf_only = load_model(tmp_path / "hf-bert", "local", window=2, block=16)  # no modules.json: mean pooling added
    assert hf_only[0].attention_config.window == 2


def test_training_step_backpropagates_through_sparse_attention(tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = tiny_sentence_transformer("bert", tmp_path)
    set_attention(model, "local", window=4, block=16)
    before = {n: p.detach().clone() for n, p in model[0].auto_model.named_parameters()}
    data = Dataset.from_dict({"anchor": TEXTS * 2, "positive": list(reversed(TEXTS)) * 2})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_train_epochs=1, learning_rate=1e-3,
        report_to=[], save_strategy="no", use_cpu=True, logging_strategy="no", seed=0)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                         loss=MultipleNegativesRankingLoss(model))
    trainer.train()
    after = dict(model[0].auto_model.named_parameters())
    changed = [n for n in before if "attention.self.query" in n and not torch.equal(before[n], after[n].detach())]
    assert changed, "query projections got no gradient through the sparse attention"
    assert model[0].auto_model.config._attn_implementation == "mlret_sparse"


def test_unswappable_models_get_a_clear_error():
    from transformers import PreTrainedModel

    with pytest.raises(TypeError, match="expected a SentenceTransformer"):
        check_swappable(torch.nn.Linear(2, 2))

    class LegacyAttention(torch.nn.Module):
        pass

    class LegacyModel(PreTrainedModel):
        @classmethod
        def _can_set_attn_implementation(cls):
            return False

    from transformers import BertConfig

    legacy = LegacyModel.__new__(LegacyModel)
    torch.nn.Module.__init__(legacy)
    legacy.config = BertConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1, intermediate_size=8)
    legacy.config.model_type = "legacy-bert"
    with pytest.raises(TypeError, match="legacy-bert"):
        check_swappable(legacy)
