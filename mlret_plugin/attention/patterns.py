"""Builders turning a SparsityConfig into a BlockLayout (the lookup table every backend consumes)."""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import torch

from mlret_plugin.attention.layout import BlockLayout

if TYPE_CHECKING:  # annotations only: config.py imports this module to build layouts
    from mlret_plugin.attention.config import SparsityConfig


def layout_from_block_mask(block_mask: torch.Tensor, block: int, seq_len: int, window: int | None = None,
                           num_global: int = 0) -> BlockLayout:
    """A BlockLayout from a bool ``[H, n_blocks, n_blocks]`` block mask (ascending key blocks, -1 padded)."""
    block_mask = block_mask.bool().cpu()
    h, n, _ = block_mask.shape
    nnz = block_mask.sum(-1).to(torch.int32)
    max_nnz = max(int(nnz.max()), 1)
    # Sort so listed blocks come first in ascending order: key = column id for True, n + column for False.
    cols = torch.arange(n).expand(h, n, n)
    order = torch.where(block_mask, cols, cols + n).argsort(-1)[..., :max_nnz]
    lut = torch.where(torch.arange(max_nnz) < nnz[..., None], order, torch.full_like(order, -1)).to(torch.int32)
    return BlockLayout(block=block, seq_len=seq_len, lut=lut.contiguous(), nnz=nnz, window=window,
                       num_global=num_global)


def _check_seq_len(seq_len: int) -> None:
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"sequence length must be an integer >= 1; got {seq_len!r}")


def dense_block_mask(n_blocks: int) -> torch.Tensor:
    return torch.ones(1, n_blocks, n_blocks, dtype=torch.bool)


def local_block_mask(seq_len: int, block: int, window: int, num_global: int) -> torch.Tensor:
    """Smallest block cover of ``|i - j| <= window`` plus global rows / columns for the first tokens."""
    n = -(-seq_len // block)
    first = torch.arange(n) * block  # first token of each block
    last = torch.clamp(first + block - 1, max=seq_len - 1)
    # Key block j is needed by query block i when their token ranges come within `window` of each other.
    gap = torch.clamp(first[None, :] - last[:, None], min=0) + torch.clamp(first[:, None] - last[None, :], min=0)
    mask = gap <= window
    if num_global:
        g_blocks = -(-num_global // block)
        mask[:g_blocks, :] = True
        mask[:, :g_blocks] = True
    return mask[None]


def block_sparse_block_mask(config: SparsityConfig, seq_len: int, num_heads: int) -> torch.Tensor:
    """BigBird-style: band + global blocks + strided blocks + seeded random blocks per row."""
    n = -(-seq_len // config.block)
    idx = torch.arange(n)
    base = (idx[:, None] - idx[None, :]).abs() <= config.band
    g = min(config.num_global, n)  # a sequence shorter than the global blocks is all global
    base[:g, :] = True
    base[:, :g] = True
    if config.stride:
        base[:, (idx + 1) % config.stride == 0] = True
    heads = num_heads if (config.per_head and config.num_random) else 1
    mask = base[None].repeat(heads, 1, 1)
    if config.num_random:
        gen = torch.Generator().manual_seed(config.seed)
        for h in range(heads):
            for i in range(g, n):
                free = (~mask[h, i]).nonzero().flatten()
                if free.numel():
                    pick = free[torch.randperm(free.numel(), generator=gen)[: config.num_random]]
                    mask[h, i, pick] = True
    return mask


@lru_cache(maxsize=256)
def build_layout(config: SparsityConfig, seq_len: int, num_heads: int = 1) -> BlockLayout:
    """The BlockLayout for ``config`` at ``seq_len`` tokens; ``num_heads`` matters only for per-head layouts."""
    _check_seq_len(seq_len)
    if config.kind == "dense":
        return layout_from_block_mask(dense_block_mask(-(-seq_len // config.block)), config.block, seq_len)
    if config.kind == "local":
        if config.num_global > seq_len:
            raise ValueError(f"SparsityConfig.num_global={config.num_global} global tokens exceed the sequence "
                             f"length {seq_len}")
        mask = local_block_mask(seq_len, config.block, config.window, config.num_global)
        return layout_from_block_mask(mask, config.block, seq_len, window=config.window,
                                      num_global=config.num_global)
    mask = block_sparse_block_mask(config, seq_len, num_heads)
    return layout_from_block_mask(mask, config.block, seq_len)
