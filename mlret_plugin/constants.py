"""Names and values that several floors of the package share: one home, so a list is never written twice.

Only plain data lives here (no imports), so the command-line parser can use it without loading torch.
"""
from __future__ import annotations

# LAReQA's settings: Mono (each language), Cross (each ordered pair), Multi (the pool).
SETTINGS = ("mono", "cross", "multi")
SETTING_TITLES = {"mono": "Mono", "cross": "Cross", "multi": "Multi"}

# Measures (ir_measures names). MaxRankDist is the plugin's own, registered with ir_measures.
MAX_RANK_DIST = "MaxRankDist"
DEFAULT_MEASURES = ("AP", "nDCG@10", "R@10", "RR@10", "R@100")  # `mlret evaluate`
LAREQA_MEASURES = ("AP", "R@1", "R@10", MAX_RANK_DIST)  # `mlret lareqa` and the experiment grids

# How a dense model encodes a candidate: (sentence, paragraph) as a tokenizer pair, or the sentence alone.
CANDIDATE_KINDS = ("context", "sentence")

# What a training pair's passage is, for LAReQA ids: the answer sentence, its paragraph, or both.
PASSAGE_FIELDS = ("text", "context", "text+context")

# Attention patterns (SparsityConfig.kind), the block sizes every backend supports, and the backends.
ATTENTION_KINDS = ("dense", "local", "block_sparse")
BLOCK_SIZES = (16, 32, 64, 128)
ATTENTION_BACKENDS = ("auto", "torch", "triton")

# What runs a dense model's transformer (encoding.backends), and in which precision.
ENCODING_BACKENDS = ("torch", "onnx", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")

__all__ = ["ENCODING_BACKENDS", "PRECISIONS", "ATTENTION_BACKENDS", "ATTENTION_KINDS", "BLOCK_SIZES", "CANDIDATE_KINDS", "DEFAULT_MEASURES",
           "LAREQA_MEASURES", "MAX_RANK_DIST", "PASSAGE_FIELDS", "SETTINGS", "SETTING_TITLES"]
