"""The systems of an evaluation (BM25 and dense models), built and checked before any long work starts.

``build_systems`` resolves every model spec (aliases, the ``default`` fallback) and loads every model, and
starts BM25's JVM, so a missing model, package, device or Java fails before the first index or encoding.
``close_systems`` stops encoding worker pools and logs how much of each model's encoding the embedding
cache saved.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from mlret_plugin.constants import CANDIDATE_KINDS
from mlret_plugin.models import specs

log = logging.getLogger(__name__)


def build_systems(
    models: Sequence[str] = (),
    bm25: bool = False,
    *,
    bm25_k1: float = 0.9,
    bm25_b: float = 0.4,
    candidates: str = "context",
    query_prompt: str | None = None,
    passage_prompt: str | None = None,
    batch_size: int = 32,
    cache=None,
    devices: str | list[str] | None = None,
    processes: int | None = None,
    backend: str = "torch",
    precision: str = "fp32",
    default_if_none: bool = False,
    allow_empty: bool = False,
) -> list:
    """Retrievers for ``models`` (folders, hub ids, aliases) and, with ``bm25``, a ``BM25Retriever`` first.

    ``default_if_none``: with no model and no BM25, use the ``default`` model. Where ``default`` finds no dense
    model at all (no hub, no offline package), BM25 runs alone (announced loudly by the resolver).
    ``cache``: the embedding cache (None: the default one, False: off, a folder). ``backend`` / ``precision``
    run the dense models (``encoding.backends``; checked before any model loads); ``"auto"`` picks, per model,
    the fastest variant faithful to torch fp32 that runs here (``choose_variant``; logged, and a WARNING names
    what to install when a faster one was passed over). A system not on torch fp32 is named with its variant
    (``NAME-openvino-bf16``). Raises ValueError for nothing to evaluate unless ``allow_empty``
    (e.g. only run files are evaluated)."""
    if candidates not in CANDIDATE_KINDS:
        raise ValueError(f"candidates={candidates!r}; expected one of {CANDIDATE_KINDS}")
    from mlret_plugin.encoding import parse_devices
    from mlret_plugin.encoding.backends import AUTO, check_backend

    device_list = parse_devices(devices, processes)
    if AUTO not in (backend, precision):
        check_backend(backend, precision)
    chosen = list(models) or ([specs.DEFAULT_ALIAS] if default_if_none and not bm25 else [])
    resolved = []
    for spec in chosen:
        path = specs.resolve_model_spec(spec)
        if path is None:  # default model unavailable and no offline package: BM25 only (announced loudly)
            bm25 = True
            continue
        resolved.append(path)
    if not resolved and not bm25 and not allow_empty:
        raise ValueError("nothing to evaluate: give BM25 and/or a dense model")
    systems = [_bm25(bm25_k1, bm25_b)] if bm25 else []
    if not resolved:
        return systems
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    from mlret_plugin.encoding.backends import variant_of
    from mlret_plugin.evaluation.dense import DenseRetriever, load_encoder

    names: set[str] = set()
    for path in resolved:
        model = load_encoder(path, backend, precision, specs.model_name(path))
        variant = variant_of(model)
        suffix = "" if variant == ("torch", "fp32") else "-" + "-".join(variant)
        name = specs.model_name(path) + suffix
        if name in names:
            name = f"{name}-{len(names) + 1}"
        names.add(name)
        systems.append(DenseRetriever(model, candidates=candidates, query_prompt=query_prompt,
                                      passage_prompt=passage_prompt, batch_size=batch_size,
                                      name=name if candidates == "context" else f"{name}-sentence",
                                      cache=cache, devices=device_list))
    return systems


def _bm25(k1: float, b: float):
    try:
        from mlret_plugin.evaluation.bm25 import BM25Retriever
    except ImportError as e:
        raise RuntimeError(f"BM25: the BM25 module could not be imported ({e})") from e
    return BM25Retriever(k1=k1, b=b)


def close_systems(systems: Sequence) -> None:
    """Stop encoding worker pools; log the embedding cache's share of each dense system's texts."""
    for system in systems:
        if hasattr(system, "close"):
            system.close()
        if getattr(system, "cache", None) is not None:
            log.info("[%s] embedding cache %s: %d texts reused, %d encoded", system.name, Path(system.cache.root),
                     system.cached_texts, system.encoded_texts)


__all__ = ["build_systems", "close_systems"]
