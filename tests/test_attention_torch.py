"""The PyTorch block-sparse path against dense SDPA under the same mask (forward and gradients)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlret_plugin.attention import SparsityConfig, layout_attention, layout_from_block_mask, sparse_attention

TOL = 1e-5
SEQ_LENS = (1, 63, 64, 100, 257)


def reference(q, k, v, layout, kpm=None):
    """Dense SDPA with the layout's expanded token mask (and key padding)."""
    mask = layout.token_mask()[None]
    if kpm is not None:
        mask = mask & kpm[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def qkv(B, H, L, D, seed=0, grad=False):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, D, generator=gen).requires_grad_(grad) for _ in range(3)]


def padding_mask(B, L):
    kpm = torch.ones(B, L, dtype=torch.bool)
    for b in range(1, B):
        kpm[b, max(1, L - 7 * b - L // 3):] = False  # each later sequence shorter, at least one real token
    return kpm


def max_err_real(out, ref, kpm):
    """Max abs difference over real (non-padding) query positions."""
    real = torch.ones(out.shape[0], out.shape[2], dtype=torch.bool) if kpm is None else kpm
    return ((out - ref).abs() * real[:, None, :, None]).max().item()


PATTERNS = {
    "local": SparsityConfig("local", window=20, block=16),
    "local_global": SparsityConfig("local", window=33, num_global=1, block=32),
    "bigbird": SparsityConfig("block_sparse", block=16, band=1, num_global=1, num_random=2, stride=5, seed=3),
    "bigbird_per_head": SparsityConfig("block_sparse", block=16, band=1, num_random=1, per_head=True),
    "band0": SparsityConfig("block_sparse", block=32, band=0),
}


def paths_for(layout):
    return ("auto", "gathered", "dense_cover") + (("banded",) if layout.window is not None else ())


@pytest.mark.parametrize("L", SEQ_LENS)
def test_full_layout_equals_dense_sdpa_forward_and_grads(L):
    q, k, v = qkv(2, 3, L, 16, grad=True)
    n = -(-L // 16)
    layout = layout_from_block_mask(torch.ones(1, n, n, dtype=torch.bool), 16, L)
    for path in ("gathered", "dense_cover", "auto"):
        out = layout_attention(q, k, v, layout, path=path)
        ref = F.scaled_dot_product_attention(q, k, v)
        assert (out - ref).abs().max().item() <= TOL, path
        g_out = torch.autograd.grad(out.square().sum(), (q, k, v))
        g_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
        for a, b in zip(g_out, g_ref):
            assert (a - b).abs().max().item() <= TOL, path


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("L", SEQ_LENS)
def test_pattern_equals_sdpa_with_expanded_mask(name, L):
    config = PATTERNS[name]
    if config.num_global > L:
        pytest.skip("more global tokens than the sequence (an error, tested elsewhere)")
    q, k, v = qkv(2, 3, L, 16, seed=L, grad=True)
    layout = config.layout(L, 3)
    for kpm in (None, padding_mask(2, L)):
        ref = reference(q, k, v, layout, kpm)
        g_ref = torch.autograd.grad((ref * _real(kpm, ref)).square().sum(), (q, k, v))
        for path in paths_for(layout):
            out = layout_attention(q, k, v, layout, kpm, path=path)
            assert not out.isnan().any(), path
            assert max_err_real(out, ref, kpm) <= TOL, (path, kpm is not None)
            g_out = torch.autograd.grad((out * _real(kpm, out)).square().sum(), (q, k, v))
            for a, b in zip(g_out, g_ref):
                assert (a - b).abs().max().item() <= TOL, (path, kpm is not None)


def _real(kpm, out):
    return 1.0 if kpm is None else kpm[:, None, :, None].to(out.dtype)


def test_local_long_sequence_equals_band_mask():
    """The banded path on a long sequence (strided key views, several blocks) against the band mask."""
    L, w = 1024, 96
    q, k, v = qkv(1, 2, L, 32, seed=7)
    out = sparse_attention(q, k, v, SparsityConfig("local", window=w), backend="torch")
    pos = torch.arange(L)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=(pos[:, None] - pos[None, :]).abs() <= w)
    assert (out - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("name", sorted(n for n in PATTERNS if not PATTERNS[n].num_random))
def test_padded_batch_equals_each_sequence_alone(name):
    config = PATTERNS[name]
    lengths = [257, 100, 63, 1]
    L = max(lengths)
    q, k, v = qkv(len(lengths), 2, L, 16, seed=11)
    kpm = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    out = sparse_attention(q, k, v, config, key_padding_mask=kpm, backend="torch")
    assert not out.isnan().any()
    for b, n in enumerate(lengths):
        if config.num_global > n:
            continue
        alone = sparse_attention(q[b:b + 1, :, :n], k[b:b + 1, :, :n], v[b:b + 1, :, :n], config, backend="torch")
        assert (out[b:b + 1, :, :n] - alone).abs().max().item() <= TOL, (b, n)


def test_dense_kind_with_padding_equals_sdpa():
    q, k, v = qkv(3, 2, 70, 8)
    kpm = padding_mask(3, 70)
    out = sparse_attention(q, k, v, SparsityConfig("dense"), key_padding_mask=kpm)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=kpm[:, None, None, :])
    assert max_err_real(out, ref, kpm) <= TOL


def test_smaller_window_changes_output():
    q, k, v = qkv(1, 2, 200, 16)
    wide = sparse_attention(q, k, v, SparsityConfig("local", window=199))
    narrow = sparse_attention(q, k, v, SparsityConfig("local", window=10))
    dense = F.scaled_dot_product_attention(q, k, v)
    assert (wide - dense).abs().max().item() <= TOL
    assert (narrow - dense).abs().max().item() > 1e-2


def test_dropout_is_applied_in_training_only_when_asked():
    q, k, v = qkv(1, 2, 300, 16)
    config = SparsityConfig("local", window=40)
    a = sparse_attention(q, k, v, config, backend="torch")
    torch.manual_seed(0)
    b = sparse_attention(q, k, v, config, backend="torch", dropout_p=0.5)
    assert (a - b).abs().max().item() > 1e-2


@pytest.mark.parametrize("name", sorted(n for n in PATTERNS if PATTERNS[n].num_random))
def test_random_patterns_batch_rows_are_independent(name):
    """Random blocks are drawn per padded length (as in BigBird), so compare with the sequence alone at that length."""
    config = PATTERNS[name]
    lengths = [257, 100, 63, 1]
    L = max(lengths)
    q, k, v = qkv(len(lengths), 2, L, 16, seed=11)
    kpm = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    out = sparse_attention(q, k, v, config, key_padding_mask=kpm, backend="torch")
    for b, n in enumerate(lengths):
        alone = sparse_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], config, key_padding_mask=kpm[b:b + 1],
                                 backend="torch")
        assert (out[b:b + 1, :, :n] - alone[:, :, :n]).abs().max().item() <= TOL, (b, n)


# ----------------------------------------------------------------- every path against a float64 reference

EXACT = {
    **PATTERNS,
    "local_3_global": SparsityConfig("local", window=20, num_global=3, block=16),
    "bigbird_b32": SparsityConfig("block_sparse", block=32, band=1, num_global=1, num_random=2, seed=1),
}


def reference64(q, k, v, layout, kpm=None, scale=None):
    """Dense masked attention in float64 (rows with no allowed key give 0)."""
    q, k, v = (t.detach().double().requires_grad_(t.requires_grad) for t in (q, k, v))
    mask = layout.token_mask()[None]
    if kpm is not None:
        mask = mask & kpm[:, None, None, :]
    scores = (q @ k.transpose(-1, -2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1).nan_to_num(0.0)
    return q, k, v, probs @ v


def holes_mask(B, L):
    """Key padding that is not a suffix (holes inside the sequence) for the later sequences."""
    kpm = torch.ones(B, L, dtype=torch.bool)
    for b in range(1, B):
        kpm[b, b::5] = False
    kpm[:, 0] = True
    return kpm


def check_against_float64(q, k, v, layout, kpm, path, tol=2e-5, scale=None):
    ref_inputs = reference64(q, k, v, layout, kpm, scale)
    ref = ref_inputs[3]
    out = layout_attention(q, k, v, layout, kpm, path=path, scale=scale)
    assert out.dtype == q.dtype and not out.isnan().any(), path
    real = _real(kpm, out)
    assert ((out.double() - ref) * real).abs().max().item() <= tol, path
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    g_out = torch.autograd.grad((out * real * weight.to(out.dtype)).sum(), (q, k, v))
    g_ref = torch.autograd.grad((ref * real * weight).sum(), ref_inputs[:3])
    for name, a, b in zip("qkv", g_out, g_ref):
        assert (a.double() - b).abs().max().item() <= tol * max(1.0, b.abs().max().item()), (path, name)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "single_call"])
@pytest.mark.parametrize("name", sorted(EXACT))
@pytest.mark.parametrize("L", (63, 257, 301))
def test_paths_equal_float64_reference(name, L, fused, monkeypatch):
    """Forward and backward of every path, fused (CPU parts + merge) and single-call, against float64 dense
    attention with the same token mask: no padding, right padding and holes, odd lengths, per-head layouts,
    global tokens; backward chunks of one tile (the smallest)."""
    from mlret_plugin.attention import torch_backend

    monkeypatch.setattr(torch_backend, "FUSED", fused)
    monkeypatch.setattr(torch_backend, "BACKWARD_CHUNK_BYTES", 1)
    config = EXACT[name]
    q, k, v = qkv(3, 3, L, 16, seed=L + 1, grad=True)
    layout = config.layout(L, 3)
    for kpm in (None, padding_mask(3, L), holes_mask(3, L)):
        for path in paths_for(layout):
            check_against_float64(q, k, v, layout, kpm, path, scale=0.3 if path == "auto" else None)


def _irregular_layout(L, block=16):
    """A block layout whose dense (global) row is not the first: the fused path declines, single-call runs."""
    n = -(-L // block)
    mask = (torch.arange(n)[:, None] - torch.arange(n)[None]).abs() <= 1
    mask[n // 2] = True
    mask[:, 0] = True
    return layout_from_block_mask(mask[None], block, L)


def test_irregular_layout_equals_float64_reference():
    L = 1100  # long enough for 'auto' to choose the gathered path, which runs single-call here
    q, k, v = qkv(2, 2, L, 16, seed=3, grad=True)
    layout = _irregular_layout(L, block=64)
    for kpm in (None, padding_mask(2, L)):
        for path in ("auto", "gathered"):
            check_against_float64(q, k, v, layout, kpm, path)


def test_fused_path_runs_on_cpu_and_takes_hf_layout_views(monkeypatch):
    """q, k, v as transformers hands them ([B, L, H, D] projections transposed: not contiguous)."""
    from mlret_plugin.attention import torch_backend

    calls = []
    apply = torch_backend._PartsAttention.apply
    monkeypatch.setattr(torch_backend._PartsAttention, "apply", lambda *a: calls.append(1) or apply(*a))
    L = 1100
    x = [torch.randn(2, L, 3, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    q, k, v = (t.transpose(1, 2).requires_grad_() for t in x)
    kpm = padding_mask(2, L)
    for config in (SparsityConfig("local", window=40, num_global=1), EXACT["bigbird_b32"]):
        calls.clear()
        check_against_float64(q, k, v, config.layout(L, 3), kpm, "auto")
        assert calls, config


def test_fused_backward_with_its_own_tile(monkeypatch):
    """The fused banded backward may tile differently from its forward (it works from the merged output)."""
    from mlret_plugin.attention import torch_backend

    monkeypatch.setattr(torch_backend, "BAND_QUERY_BLOCK", 16)
    monkeypatch.setattr(torch_backend, "BAND_BACKWARD_BLOCK", 64)
    monkeypatch.setattr(torch_backend, "BACKWARD_CHUNK_BYTES", 1 << 16)
    for config in (EXACT["local"], EXACT["local_3_global"]):
        for L in (100, 301):
            q, k, v = qkv(3, 3, L, 16, seed=L, grad=True)
            for kpm in (None, padding_mask(3, L), holes_mask(3, L)):
                check_against_float64(q, k, v, config.layout(L, 3), kpm, "banded")
