"""Swappable attention: sparsity patterns, block layouts, a fast PyTorch path and the HF integration.

``sparse_attention(q, k, v, config, key_padding_mask=None, backend="auto")`` is the functional API;
``register_with_transformers()`` (in ``hf``) makes the patterns available to transformers models.
"""
from __future__ import annotations

from mlret_plugin.attention.config import BLOCK_SIZES, KINDS, SparsityConfig
from mlret_plugin.attention.functional import BACKENDS, layout_attention, resolve_backend, sparse_attention
from mlret_plugin.attention.hf import IMPLEMENTATION, register_with_transformers
from mlret_plugin.attention.layout import BlockLayout
from mlret_plugin.attention.patterns import build_layout, layout_from_block_mask

__all__ = [
    "BACKENDS",
    "BLOCK_SIZES",
    "KINDS",
    "BlockLayout",
    "IMPLEMENTATION",
    "SparsityConfig",
    "build_layout",
    "layout_attention",
    "layout_from_block_mask",
    "register_with_transformers",
    "resolve_backend",
    "sparse_attention",
]
