"""bfloat16 on the torch paths and through transformers: compared with float32 the way the float32 paths are
compared with dense attention, with stated tolerances.

bf16 keeps ~3 significant digits: dense SDPA in bf16 differs from float32 by ~2-4e-3 on these inputs
(|output| <= ~1.5); the blocked paths also round each part's output to bf16 before the exact merge, so
they may differ by about twice that. Tolerances: forward 1.5e-2 absolute; gradients 2e-2 of the largest
gradient entry; embeddings cosine >= 0.999.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mlret_plugin.attention import SparsityConfig, layout_attention, sparse_attention  # noqa: E402
from mlret_plugin.attention import torch_backend  # noqa: E402

FWD_TOL = 1.5e-2
GRAD_TOL = 2e-2
COSINE = 0.999

PATTERNS = {
    "local": SparsityConfig("local", window=40, block=32),
    "local_global": SparsityConfig("local", window=40, num_global=2, block=32),
    "bigbird": SparsityConfig("block_sparse", block=32, band=1, num_global=1, num_random=2, seed=1),
    "bigbird_per_head": SparsityConfig("block_sparse", block=32, band=1, num_random=1, per_head=True),
}


def inputs(B, H, L, D, seed=0):
    gen = torch.Generator().manual_seed(seed)
    base = [torch.randn(B, H, L, D, generator=gen) for _ in range(3)]
    bf = [t.bfloat16().requires_grad_() for t in base]
    fp = [t.detach().float().requires_grad_() for t in bf]  # the same values, in float32
    kpm = torch.ones(B, L, dtype=torch.bool)
    kpm[-1, L // 2:] = False
    return bf, fp, kpm


def paths(layout):
    return ("banded", "gathered", "dense_cover") if layout.window is not None else ("gathered", "dense_cover")


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "single_call"])
@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("L", (257, 1100))
def test_bf16_paths_match_float32_and_dense_bf16(name, L, fused, monkeypatch):
    monkeypatch.setattr(torch_backend, "FUSED", fused)
    (q, k, v), (q32, k32, v32), kpm = inputs(2, 4, L, 32, seed=L)
    layout = PATTERNS[name].layout(L, 4)
    real = kpm[:, None, :, None]
    weight = torch.randn(2, 4, L, 32, generator=torch.Generator().manual_seed(1))
    dense_bf16 = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.token_mask()[None] & kpm[:, None, None, :])
    for path in paths(layout):
        out = layout_attention(q, k, v, layout, kpm, path=path)
        ref = layout_attention(q32, k32, v32, layout, kpm, path=path)
        assert out.dtype == torch.bfloat16, path  # never a silent switch to float32
        assert ((out.float() - ref) * real).abs().max().item() <= FWD_TOL, path
        assert ((out - dense_bf16).float() * real).abs().max().item() <= FWD_TOL, path
        grads = torch.autograd.grad((out.float() * real * weight).sum(), (q, k, v))
        grads32 = torch.autograd.grad((ref * real * weight).sum(), (q32, k32, v32))
        for g, g32 in zip(grads, grads32):
            assert g.dtype == torch.bfloat16
            assert (g.float() - g32).abs().max().item() <= GRAD_TOL * g32.abs().max().item(), path


def test_autocast_runs_the_sparse_path_in_bf16():
    """Under CPU autocast float32 q, k, v run in bf16, as scaled_dot_product_attention does."""
    (_, (q, k, v), kpm) = inputs(2, 4, 1100, 32)
    config = PATTERNS["local_global"]
    ref = sparse_attention(q, k, v, config, key_padding_mask=kpm, backend="torch")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sparse_attention(q, k, v, config, key_padding_mask=kpm, backend="torch")
        assert F.scaled_dot_product_attention(q, k, v).dtype == torch.bfloat16  # the behaviour we follow
    assert out.dtype == torch.bfloat16
    assert ((out.float() - ref) * kpm[:, None, :, None]).abs().max().item() <= FWD_TOL


def test_unsupported_dtype_is_a_clear_error():
    q = torch.randn(1, 2, 1100, 16).to(torch.float8_e4m3fn)
    with pytest.raises(TypeError, match="float8_e4m3fn.*cast q, k, v explicitly"):
        sparse_attention(q, q, q, PATTERNS["local"], backend="torch")


@pytest.mark.parametrize("pattern", [dict(attention="local", window=6, num_global=1),
                                     dict(attention="block_sparse", block=16, band=1, num_global=1, num_random=1)],
                         ids=["local", "block_sparse"])
def test_tiny_bert_in_bf16_and_under_autocast_encodes_like_float32(pattern, tmp_path, monkeypatch):
    """End to end: load_model with a pattern, then model.to(bf16), and autocast, through the blocked paths."""
    from mlret_plugin import load_model
    from tiny_models import tiny_model_dir

    monkeypatch.setattr(torch_backend, "MIN_BLOCKED_LEN", 1)  # the tiny model's texts are short
    calls = []
    apply = torch_backend._PartsAttention.apply
    monkeypatch.setattr(torch_backend._PartsAttention, "apply", lambda *a: calls.append(a[0].dtype) or apply(*a))
    texts = ["The river flows through the capital city before it reaches the sea. " * 8,
             "Der schnelle braune Fuchs springt über den faulen Hund. " * 5, "Where was the treaty signed?"]
    pattern = dict(pattern)
    model = load_model(tiny_model_dir("bert", tmp_path), pattern.pop("attention"), **pattern)
    fp32 = model.encode(texts, convert_to_tensor=True, batch_size=len(texts))
    assert calls and set(calls) == {torch.float32}
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = model.encode(texts, convert_to_tensor=True, batch_size=len(texts))
    assert calls and set(calls) == {torch.bfloat16}
    calls.clear()
    model.to(torch.bfloat16)
    bf16 = model.encode(texts, convert_to_tensor=True, batch_size=len(texts))
    assert calls and set(calls) == {torch.bfloat16}
    for other in (autocast, bf16):
        cosine = F.cosine_similarity(other.float(), fp32.float(), dim=-1)
        assert cosine.min().item() >= COSINE, cosine


@pytest.mark.parametrize("name", ["local_global", "bigbird"])
def test_float16_runs_natively_too(name):
    (_, (q, k, v), kpm) = inputs(2, 4, 1100, 32, seed=2)
    q16, k16, v16 = (t.detach().half().requires_grad_() for t in (q, k, v))
    config = PATTERNS[name]
    out = sparse_attention(q16, k16, v16, config, key_padding_mask=kpm, backend="torch")
    ref = sparse_attention(q, k, v, config, key_padding_mask=kpm, backend="torch")
    assert out.dtype == torch.float16
    assert ((out.float() - ref) * kpm[:, None, :, None]).abs().max().item() <= 2e-3  # fp16: 10 mantissa bits
    grads = torch.autograd.grad((out.float() * kpm[:, None, :, None]).sum(), (q16, k16, v16))
    assert all(g.dtype == torch.float16 and g.isfinite().all() for g in grads)
