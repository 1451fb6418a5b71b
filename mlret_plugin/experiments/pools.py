"""Which languages make up a pool of each size.

Rule (documented, seeded, nested):
1. English first: every pool contains ``en`` (the language both collections are built around and the
   one every MLQA-R question exists in).
2. The other languages follow in an order drawn by ``random.Random(f"{seed}:{collection}")`` from the
   collection's languages in alphabetical order.
3. A pool of size n is the first n languages of that order, so a pool of size 4 contains the pool of
   size 2: growing the pool only adds languages, and degradation vs pool size is not confounded by
   swapping languages in and out.
A size larger than the collection's language count, or below 2 (no cross-lingual pair), is an error.
"""
from __future__ import annotations

import random
from typing import Iterable

from mlret_plugin.datasets import COLLECTIONS

ANCHOR = "en"


def language_order(collection: str, seed: int = 0) -> tuple[str, ...]:
    """English, then the collection's other languages in the seeded order."""
    if collection not in COLLECTIONS:
        raise ValueError(f"unknown collection {collection!r}; expected one of {sorted(COLLECTIONS)}")
    others = sorted(lang for lang in COLLECTIONS[collection] if lang != ANCHOR)
    random.Random(f"{seed}:{collection}").shuffle(others)
    return (ANCHOR, *others)


def parse_pool_sizes(text: str | Iterable[int], collection: str) -> list[int]:
    """``"2,4,7,11"`` -> [2, 4, 7, 11] (sorted, unique), validated against the collection."""
    if isinstance(text, str):
        try:
            sizes = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"pool_sizes {text!r}: expected comma-separated integers, e.g. 2,4,7,11") from None
    else:
        sizes = [int(s) for s in text]
    if not sizes:
        raise ValueError("pool_sizes is empty; e.g. [2, 4, 7, 11]")
    n = len(COLLECTIONS.get(collection, ()))
    if collection not in COLLECTIONS:
        raise ValueError(f"unknown collection {collection!r}; expected one of {sorted(COLLECTIONS)}")
    for size in sizes:
        if size < 2:
            raise ValueError(f"pool_sizes: {size} is too small; a pool needs >= 2 languages for cross-lingual pairs")
        if size > n:
            raise ValueError(f"pool_sizes: {size} exceeds the {n} languages of {collection} ({', '.join(COLLECTIONS[collection])})")
    return sorted(set(sizes))


def pool_languages(collection: str, size: int, seed: int = 0) -> tuple[str, ...]:
    """The ``size`` languages of a pool (in the collection's order, as ``Subset`` keeps them)."""
    parse_pool_sizes([size], collection)
    chosen = set(language_order(collection, seed)[:size])
    return tuple(lang for lang in COLLECTIONS[collection] if lang in chosen)
