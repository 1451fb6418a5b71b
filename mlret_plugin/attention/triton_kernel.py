"""Block-sparse FlashAttention-2 in Triton: the call users make, and its autograd Function.

The algorithm is in ``triton_kernels`` (the kernels, with its description), the launch table in
``triton_configs``, input checks and launches in ``triton_launch``; this module puts them together.
Running it. On CUDA the kernels compile for the GPU. On CPU tensors they run only under Triton's
interpreter, which must be switched on *before triton is first imported* (``TRITON_INTERPRET=1`` in the
process environment; importing sentence_transformers already imports triton), fp32 or fp16. That is
how the tests run it; it is slow and meant for correctness checks only.
"""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from mlret_plugin.attention.layout import BlockLayout
from mlret_plugin.attention.triton_configs import (FP32_TILE_CAP, HEAD_DIM_CLASSES, KERNEL_CONFIGS,  # noqa: F401
                                                   SMEM_BUDGET, TABLE_ARCHS, UnsupportedConfig, block_d,
                                                   head_dim_class, kernel_config, launch_config, table_arch)
from mlret_plugin.attention.triton_launch import (GPU_DTYPES, INTERPRETER_DTYPES, MAX_HEAD_DIM,  # noqa: F401
                                                  MIN_HEAD_DIM, Launch, _backward, _check_inputs, _check_runtime,
                                                  _forward, _tables, backward_launches, device_arch, forward_launch,
                                                  interpreted, transposed_lut)
from mlret_plugin.constants import BLOCK_SIZES  # noqa: F401


class BlockSparseAttention(torch.autograd.Function):
    """Autograd for the kernels: saves q, k, v, O and the log-sum-exp; the backward recomputes P per tile."""

    @staticmethod
    def forward(ctx, q, k, v, layout, key_padding_mask, scale):
        o, lse = _forward(q, k, v, layout, key_padding_mask, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.layout = layout
        ctx.key_padding_mask = key_padding_mask
        ctx.scale = scale
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse, ctx.layout, ctx.key_padding_mask, ctx.scale)
        return dq, dk, dv, None, None, None


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of ``q, k, v`` [B, H, L, D] over ``layout``'s blocks, by the Triton kernels; differentiable.

    ``key_padding_mask``: bool [B, L], True = real token. ``scale`` defaults to 1/sqrt(D). Query rows
    with no allowed key output zeros (and get zero gradient). CUDA: fp32/fp16/bf16, head_dim 16..128.
    CPU: only under ``TRITON_INTERPRET=1`` set before triton is imported, fp32/fp16 (for tests).
    """
    _check_inputs(q, k, v, layout, key_padding_mask, scale)
    _tables(layout, q.device)  # validates the lookup table (once per layout and device)
    _check_runtime(q.device)
    arch = device_arch(q.device)
    for kernel in ("fwd", "dkdv", "dq"):  # refused configurations fail here, not halfway through a backward
        kernel_config(kernel, arch, q.element_size(), layout.block, q.shape[-1])
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return BlockSparseAttention.apply(q, k, v, layout, key_padding_mask, scale)


__all__ = ["BlockSparseAttention", "block_sparse_attention", "interpreted"]
