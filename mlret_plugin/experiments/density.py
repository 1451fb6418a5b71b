"""How much of the attention a pattern keeps at the lengths the model actually sees.

A pattern's density at length L is the share of (query, key) token pairs it computes (``BlockLayout.density``);
at the candidates' lengths it is the mean over candidates of the density at each one's token length (special
tokens and prompt included, capped at ``max_seq_length``). A window wider than most inputs keeps everything:
the patterns only "bite" where this is well below 1.
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Mapping, Sequence


def input_lengths(model, inputs: Sequence) -> Counter:
    """Token counts of ``inputs`` (texts or (text, context) pairs) as the model encodes them: {length: count}."""
    tokenizer, cap = model.tokenizer, model.max_seq_length
    if not inputs:
        return Counter()
    if isinstance(inputs[0], (tuple, list)):
        ids = tokenizer([a for a, _ in inputs], [b for _, b in inputs], truncation="longest_first", max_length=cap)["input_ids"]
    else:
        ids = tokenizer(list(inputs), truncation=True, max_length=cap)["input_ids"]
    return Counter(len(x) for x in ids)


@lru_cache(maxsize=4096)
def _density(kind: str, config: tuple, length: int) -> float:
    from mlret_plugin.attention.config import SparsityConfig

    if kind == "dense":
        return 1.0
    return SparsityConfig(kind=kind, **dict(config)).layout(length).density


def pattern_density(kind: str, config: Mapping, lengths: Mapping[int, int]) -> float:
    """Mean density of the pattern over inputs with these {length: count}."""
    total = sum(lengths.values())
    if not total:
        return float("nan")
    frozen = tuple(sorted(config.items()))
    return sum(_density(kind, frozen, int(length)) * n for length, n in lengths.items()) / total


def median_length(lengths: Mapping[int, int]) -> int:
    total = sum(lengths.values())
    seen = 0
    for length in sorted(lengths, key=int):
        seen += lengths[length]
        if 2 * seen >= total:
            return int(length)
    return 0
