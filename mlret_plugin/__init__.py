"""mlret-plugin: multilingual retrieval research for the IR ecosystem.

``import mlret_plugin`` registers the LAReQA datasets with ir_datasets and the plugin's measures with
ir_measures. Heavy parts (torch models, training) load lazily on first attribute access.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_registered = False

# Public names and the submodule that defines each; imported on first use so that
# `import mlret_plugin` (run by ir_datasets' entry point) stays cheap.
_LAZY = {
    "AttentionSwapTransformer": "mlret_plugin.model",
    "load_model": "mlret_plugin.model",
    "set_attention": "mlret_plugin.model",
    "SparsityConfig": "mlret_plugin.attention",
    "HybridBatchSampler": "mlret_plugin.training",
}


def register() -> None:
    """Register every dataset and measure of the plugin. Idempotent: later calls do nothing."""
    global _registered
    if _registered:
        return
    from mlret_plugin import datasets, evaluation

    datasets.register()
    evaluation.register_measures()
    _registered = True


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlret_plugin' has no attribute {name!r}")


register()
