"""Hybrid batch training (arXiv 2408.10536): parallel data, HybridBatchSampler, a hybrid-aware ``fit``."""
from mlret_plugin.training.data import load_parallel, parallel_dataset
from mlret_plugin.training.sampler import HybridBatchSampler

__all__ = ["HybridBatchSampler", "load_parallel", "parallel_dataset"]
