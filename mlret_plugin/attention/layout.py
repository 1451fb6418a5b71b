"""The block layout: which key blocks each query block attends to.

Every attention backend (the PyTorch path and the Triton kernel) consumes this one representation.
For query block ``i`` of layout head ``h``, ``lut[h, i, :nnz[h, i]]`` lists the key blocks it attends
to, ascending; the rest of the row is -1. ``H`` is 1 when one layout is shared by all heads, else the
number of attention heads.

Inside the listed blocks attention is whole-block, unless ``window`` is set: then the token-exact
rule ``|i - j| <= window or i < num_global or j < num_global`` also applies (the local pattern, whose
band of blocks is the smallest cover of the window). Key padding is separate: a per-sequence mask
given to the backend call.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class BlockLayout:
    block: int
    seq_len: int
    lut: torch.Tensor  # int32 [H, n_blocks, max_nnz], ascending key-block ids, -1 padded
    nnz: torch.Tensor  # int32 [H, n_blocks]
    window: int | None = None
    num_global: int = 0

    def __post_init__(self) -> None:
        n_blocks = -(-self.seq_len // self.block)
        if self.lut.dim() != 3 or self.lut.shape[1] != n_blocks:
            raise ValueError(
                f"BlockLayout.lut must be [heads, {n_blocks} query blocks, max_nnz] for seq_len={self.seq_len}, "
                f"block={self.block}; got shape {tuple(self.lut.shape)}"
            )
        if tuple(self.nnz.shape) != tuple(self.lut.shape[:2]):
            raise ValueError(f"BlockLayout.nnz must be {tuple(self.lut.shape[:2])}; got {tuple(self.nnz.shape)}")

    @property
    def heads(self) -> int:
        return self.lut.shape[0]

    @property
    def n_blocks(self) -> int:
        return self.lut.shape[1]

    @property
    def density(self) -> float:
        """Share of (query, key) token pairs that are computed, over all layout heads."""
        mask = self.token_mask()
        return float(mask.float().mean())

    def block_mask(self) -> torch.Tensor:
        """Bool [H, n_blocks, n_blocks]: True where a key block is listed for a query block."""
        h, n, _ = self.lut.shape
        out = torch.zeros(h, n, n + 1, dtype=torch.bool)
        idx = self.lut.long().clone()
        idx[idx < 0] = n  # padding goes to a spare column, dropped below
        out.scatter_(2, idx, True)
        return out[:, :, :n]

    def token_mask(self) -> torch.Tensor:
        """Bool [H, seq_len, seq_len]: the exact pattern, for references and tests (dense; small seq only)."""
        L, b = self.seq_len, self.block
        blocks = self.block_mask().repeat_interleave(b, 1).repeat_interleave(b, 2)[:, :L, :L]
        if self.window is None:
            return blocks
        pos = torch.arange(L)
        band = (pos[:, None] - pos[None, :]).abs() <= self.window
        g = self.num_global
        band |= (pos[:, None] < g) | (pos[None, :] < g)
        return blocks & band
