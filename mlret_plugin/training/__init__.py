"""Hybrid batch training (arXiv 2408.10536): parallel data, HybridBatchSampler, a hybrid-aware ``fit``.

The public names load on first use: the `mlret` parser imports ``training.run`` for its loss names, and
should not pay for sentence-transformers on every command.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "HybridBatchSampler": "mlret_plugin.training.sampler",
    "load_parallel": "mlret_plugin.training.data",
    "parallel_dataset": "mlret_plugin.training.data",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlret_plugin.training' has no attribute {name!r}")
