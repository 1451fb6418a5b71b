"""The transformers registration (attention + mask builder) and the Triton seam, without a GPU."""
from __future__ import annotations

import sys
import types

import pytest
import torch

from mlret_plugin.attention import SparsityConfig, functional, sparse_attention
from mlret_plugin.attention.hf import IMPLEMENTATION, mlret_padding_mask, register_with_transformers


def test_registered_with_both_interfaces():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    assert register_with_transformers() == IMPLEMENTATION
    assert IMPLEMENTATION in AttentionInterface._global_mapping
    assert IMPLEMENTATION in AttentionMaskInterface._global_mapping


def test_mask_builder_returns_key_padding_and_refuses_causal():
    from transformers.masking_utils import bidirectional_mask_function, causal_mask_function

    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = mlret_padding_mask(2, 3, 3, mask_function=bidirectional_mask_function, attention_mask=mask)
    assert out.dtype == torch.bool and out.tolist() == [[True, True, False], [True, True, True]]
    assert mlret_padding_mask(2, 3, 3, mask_function=bidirectional_mask_function,
                              attention_mask=torch.ones(2, 3)) is None
    with pytest.raises(ValueError, match="bidirectional"):
        mlret_padding_mask(2, 3, 3, mask_function=causal_mask_function, attention_mask=mask)


def test_attention_function_refuses_4d_masks():
    from mlret_plugin.attention.hf import mlret_sparse_attention_forward

    module = torch.nn.Module()
    module.config = types.SimpleNamespace(mlret_attention=SparsityConfig("local", window=2).to_dict())
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="2-D key padding mask"):
        mlret_sparse_attention_forward(module, q, q, q, torch.ones(1, 1, 5, 5, dtype=torch.bool))
    out, weights = mlret_sparse_attention_forward(module, q, q, q, None)
    assert out.shape == (1, 5, 2, 4) and weights is None


def test_triton_seam_gets_layout_and_padding(monkeypatch):
    calls = {}

    def fake_kernel(q, k, v, layout, key_padding_mask=None, scale=None):
        calls.update(layout=layout, kpm=key_padding_mask, scale=scale)
        return torch.zeros_like(q)

    monkeypatch.setitem(sys.modules, functional.TRITON_MODULE,
                        types.SimpleNamespace(block_sparse_attention=fake_kernel))
    monkeypatch.setattr(functional, "resolve_backend", lambda backend, device, dropout_p=0.0: "triton")
    q = torch.randn(2, 3, 40, 8)
    kpm = torch.ones(2, 40, dtype=torch.bool)
    config = SparsityConfig("local", window=5, block=16)
    sparse_attention(q, q, q, config, key_padding_mask=kpm, backend="triton", scale=0.5)
    assert calls["layout"] is config.layout(40, 3) and calls["layout"].window == 5
    assert calls["kpm"] is kpm and calls["scale"] == 0.5
    with pytest.raises(NotImplementedError, match="dropout"):
        sparse_attention(q, q, q, config, backend="triton", dropout_p=0.1)


def test_auto_picks_triton_on_cuda_only(monkeypatch):
    # resolve_backend looks at the device type only, so a CUDA device object needs no GPU here.
    monkeypatch.setattr(functional, "triton_available", lambda: (True, ""))
    assert functional.resolve_backend("auto", torch.device("cuda")) == "triton"
    assert functional.resolve_backend("auto", torch.device("cpu")) == "torch"


def test_auto_on_cuda_says_when_it_runs_the_torch_path(monkeypatch):
    monkeypatch.setattr(functional, "triton_available", lambda: (True, ""))
    with pytest.warns(RuntimeWarning, match="no dropout.*attention dropout to 0"):
        assert functional.resolve_backend("auto", torch.device("cuda"), dropout_p=0.1) == "torch"
    monkeypatch.setattr(functional, "triton_available", lambda: (False, "no module named triton"))
    with pytest.warns(RuntimeWarning, match="unavailable \\(no module named triton\\).*Install triton"):
        assert functional.resolve_backend("auto", torch.device("cuda")) == "torch"
    with pytest.raises(RuntimeError, match="not available: no module named triton"):
        functional.resolve_backend("triton", torch.device("cuda"))  # explicit: an error, never a switch

def test_attention_function_keeps_bf16(monkeypatch):
    """bf16 q, k, v (a model cast with .to(torch.bfloat16)) come back bf16 through the blocked CPU path."""
    from mlret_plugin.attention import torch_backend
    from mlret_plugin.attention.hf import mlret_sparse_attention_forward

    monkeypatch.setattr(torch_backend, "MIN_BLOCKED_LEN", 1)
    module = torch.nn.Module()
    module.config = types.SimpleNamespace(mlret_attention=SparsityConfig("local", window=9, num_global=1).to_dict())
    q, k, v = (torch.randn(2, 3, 70, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    mask = torch.ones(2, 70, dtype=torch.long)
    mask[1, 50:] = 0
    out, _ = mlret_sparse_attention_forward(module, q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    ref, _ = mlret_sparse_attention_forward(module, q, k, v, mask)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 70, 3, 8)
    assert ((out.float() - ref) * mask[:, :, None, None]).abs().max().item() <= 1.5e-2
