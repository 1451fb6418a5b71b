"""Encoding at scale: an on-disk embedding cache keyed by the encoder's fingerprint, and multi-process /
multi-GPU encoding on sentence-transformers' pool. ``DenseRetriever._encode`` uses both, so every command
that evaluates a dense model (lareqa, evaluate, experiment, train --eval) gets them."""
from __future__ import annotations

from mlret_plugin.encoding.cache import (CacheWarning, EmbeddingCache, cache_enabled_by_env, default_cache_dir,
                                         entry_key)
from mlret_plugin.encoding.fingerprint import encoder_fingerprint, weights_hash
from mlret_plugin.encoding.pool import EncodingPool, parse_devices

__all__ = ["CacheWarning", "EmbeddingCache", "EncodingPool", "cache_enabled_by_env", "default_cache_dir",
           "encoder_fingerprint", "entry_key", "parse_devices", "weights_hash"]
