"""Hybrid batch training (arXiv 2408.10536)."""
