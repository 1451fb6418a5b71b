"""SparsityConfig validation, layouts (lookup tables) and bad input to sparse_attention."""
from __future__ import annotations

import pytest
import torch

from mlret_plugin.attention import BlockLayout, SparsityConfig, sparse_attention
from mlret_plugin.attention.functional import resolve_backend
from mlret_plugin.attention.torch_backend import choose_path


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="sliding"), "kind"),
    (dict(kind="block_sparse", block=48), "block"),
    (dict(kind="local", window=-1), "window"),
    (dict(kind="local"), "window"),
    (dict(kind="dense", window=4), "window"),
    (dict(kind="block_sparse", num_random=-2), "num_random"),
    (dict(kind="block_sparse", stride=0), "stride"),
    (dict(kind="local", window=8, num_random=2), "block_sparse"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparsityConfig(**kwargs)


def test_config_round_trips_through_dict():
    config = SparsityConfig("block_sparse", block=32, band=2, num_global=1, num_random=3, stride=4, per_head=True, seed=9)
    assert SparsityConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown SparsityConfig keys"):
        SparsityConfig.from_dict({"kind": "local", "window": 3, "windw": 4})


def test_global_tokens_beyond_sequence_is_an_error():
    with pytest.raises(ValueError, match="global tokens exceed"):
        SparsityConfig("local", window=4, num_global=10).layout(5)


def _check_lut(layout: BlockLayout):
    for h in range(layout.heads):
        for i in range(layout.n_blocks):
            n = int(layout.nnz[h, i])
            row = layout.lut[h, i].tolist()
            assert row[:n] == sorted(row[:n]) and len(set(row[:n])) == n
            assert all(x == -1 for x in row[n:])


def test_local_layout_is_smallest_cover_of_window():
    layout = SparsityConfig("local", window=20, block=16).layout(100)
    _check_lut(layout)
    assert layout.window == 20 and layout.n_blocks == 7
    # Block 3 covers tokens 48..63; the window reaches 28..83 -> blocks 1..5.
    assert layout.lut[0, 3, : layout.nnz[0, 3]].tolist() == [1, 2, 3, 4, 5]
    pos = torch.arange(100)
    band = (pos[:, None] - pos[None, :]).abs() <= 20
    assert torch.equal(layout.token_mask()[0], band)
    assert layout.density == pytest.approx(float(band.float().mean()))


def test_block_sparse_layout_parts_and_seeds():
    config = SparsityConfig("block_sparse", block=16, band=1, num_global=1, num_random=2, stride=4, seed=1)
    layout = config.layout(256, 4)
    _check_lut(layout)
    mask = layout.block_mask()[0]
    n = 16
    idx = torch.arange(n)
    assert mask[(idx[:, None] - idx[None, :]).abs() <= 1].all()  # band
    assert mask[0].all() and mask[:, 0].all()  # global row / column
    assert mask[:, 3].all() and mask[:, 7].all()  # strided columns
    base = ((idx[:, None] - idx[None, :]).abs() <= 1) | (idx[:, None] == 0) | (idx[None, :] == 0) | ((idx[None, :] + 1) % 4 == 0)
    assert torch.equal((mask & ~base).sum(1)[1:], torch.full((n - 1,), 2))  # two random blocks per non-global row
    assert layout.heads == 1
    assert torch.equal(config.layout(256, 4).lut, SparsityConfig(**{**config.to_dict()}).layout(256, 4).lut)
    other_seed = SparsityConfig(**{**config.to_dict(), "seed": 2}).layout(256, 4)
    assert not torch.equal(other_seed.lut, layout.lut)
    per_head = SparsityConfig(**{**config.to_dict(), "per_head": True}).layout(256, 4)
    assert per_head.heads == 4 and not torch.equal(per_head.lut[0], per_head.lut[1])
    assert 0 < layout.density < 1


def test_short_sequence_paths_cover_everything_densely():
    assert choose_path(SparsityConfig("local", window=256).layout(300), 300) == "dense_cover"
    assert choose_path(SparsityConfig("local", window=256).layout(4096), 4096) == "banded"
    assert choose_path(SparsityConfig("block_sparse", band=1).layout(4096), 4096) == "gathered"


def _qkv(*shape, dtype=torch.float32):
    return [torch.randn(*shape, dtype=dtype) for _ in range(3)]


def test_bad_inputs_are_clear_errors():
    config = SparsityConfig("local", window=4)
    q, k, v = _qkv(1, 2, 10, 8)
    with pytest.raises(ValueError, match="same shape"):
        sparse_attention(q, k[:, :, :9], v, config)
    with pytest.raises(ValueError, match="4-D"):
        sparse_attention(q[0], k[0], v[0], config)
    with pytest.raises(ValueError, match="same dtype"):
        sparse_attention(q, k.double(), v, config)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape"):
        sparse_attention(q, k, v, config, key_padding_mask=torch.ones(1, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        sparse_attention(q, k, v, config, key_padding_mask=torch.ones(1, 10))
    with pytest.raises(TypeError, match="SparsityConfig"):
        sparse_attention(q, k, v, {"kind": "local"})
    with pytest.raises(ValueError, match="backend"):
        sparse_attention(q, k, v, config, backend="cuda")


def test_backend_choice_is_explicit():
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    with pytest.raises(RuntimeError, match="triton"):
        resolve_backend("triton", torch.device("cpu"))
    q, k, v = _qkv(1, 2, 10, 8)
    with pytest.raises(RuntimeError, match="backend='torch'"):
        sparse_attention(q, k, v, SparsityConfig("local", window=3), backend="triton")
