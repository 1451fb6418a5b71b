"""Dense retrieval with any sentence-transformers model: exact search by chunked matrix products.

Each language's candidates and queries are encoded once per retriever and reused by every subset
(mono, cross, multi), because encoding dominates the cost of a LAReQA table. Candidates are the
sentence alone (``candidates="sentence"``) or the pair (sentence, paragraph) encoded as a tokenizer
pair (``"context"``, LAReQA's answer input; the paragraph is truncated first when too long).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple

import numpy as np
import torch

from mlret_plugin.constants import CANDIDATE_KINDS
from mlret_plugin.datasets import Subset, parse_dataset_id
from mlret_plugin.evaluation.measures import FullDepthEvaluator, Qrels
from mlret_plugin.prompts import resolve_prompt

if TYPE_CHECKING:
    from mlret_plugin.encoding.cache import EmbeddingCache

log = logging.getLogger(__name__)

SCORE_CHUNK_ROWS = 128  # query rows per score chunk: 128 x 13k float32 = 6.7 MB, truncated runs stay small


class Encoded(NamedTuple):
    """Embeddings of one subset: rows of ``queries`` / ``docs`` follow ``query_ids`` / ``doc_ids``."""

    query_ids: list[str]
    queries: torch.Tensor
    doc_ids: list[str]
    docs: torch.Tensor


def as_subset(subset: Subset | str) -> Subset:
    return parse_dataset_id(subset) if isinstance(subset, str) else subset


def _lang_subset(collection: str, lang: str) -> Subset:
    # Every question of a language file has its answer in that file, so the monolingual subset holds
    # all of the language's queries and candidates.
    return Subset(collection, (lang,), (lang,))


def load_encoder(resolved: str | Path, backend: str, precision: str, name: str):
    """``load_model(resolved)`` on ``backend`` / ``precision``, "auto" in either resolved for this model (its
    device and attention pattern; ``encoding.backends.resolve_variant``, logged under ``name``)."""
    from mlret_plugin.encoding.backends import AUTO, apply_backend, resolve_variant
    from mlret_plugin.model import load_model

    if AUTO not in (backend, precision):
        return load_model(resolved, backend=backend, precision=precision)
    model = load_model(resolved, backend="torch", precision="fp32")
    return apply_backend(model, *resolve_variant(model, backend, precision, name))


class DenseRetriever:
    """A sentence-transformers model as a retriever over LAReQA subsets.

    ``model`` is a path, a hub id or an alias (loaded by ``mlret_plugin.load_model``) or an
    in-memory ``SentenceTransformer``. ``run(subset, depth)`` returns {qid: {docid: score}} with every
    query of the subset present; ``evaluate_full_depth`` gives exact full-ranking measures. Embeddings
    are kept per language for the retriever's lifetime (``clear_cache()`` after changing the model) and
    stored on disk in the embedding cache (``mlret_plugin.encoding``), keyed by the model's fingerprint.
    """

    def __init__(
        self,
        model,
        candidates: str = "context",
        query_prompt: str | None = None,
        passage_prompt: str | None = None,
        batch_size: int = 32,
        name: str | None = None,
        show_progress_bar: bool = True,
        cache: "EmbeddingCache | str | Path | bool | None" = None,
        devices: list[str] | str | None = None,
        processes: int | None = None,
        backend: str = "torch",
        precision: str = "fp32",
    ):
        """``query_prompt`` / ``passage_prompt``: None = the model's own sentence-transformers prompts
        ("query"; "passage", else "document"; empty ones do not count), a string (also "") overrides.
        ``cache``: None = the on-disk embedding cache at its default location unless MLRET_EMBEDDING_CACHE=0,
        False = off, a folder or an ``EmbeddingCache``. ``devices`` (e.g. "cuda:0,cuda:1") or ``processes``
        (N CPU workers) encode on sentence-transformers' multi-process pool; ``close()`` stops it.
        ``backend`` ('torch', 'onnx', 'openvino') and ``precision`` ('fp32', 'bf16', 'int8') run the model's
        transformer (``mlret_plugin.encoding.backends``; applied in place to a model passed in); "auto" in either
        picks the fastest variant faithful to torch fp32 here (``choose_variant``, logged). The embedding cache
        keys on them, so one backend's embeddings are never served for another."""
        if candidates not in CANDIDATE_KINDS:
            raise ValueError(f"candidates={candidates!r}; expected one of {CANDIDATE_KINDS}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
        from mlret_plugin.encoding import parse_devices
        from mlret_plugin.encoding.backends import apply_backend, resolve_variant, runtime_of

        self.devices = parse_devices(devices, processes)  # fail before the model loads
        if isinstance(model, (str, Path)):
            from mlret_plugin.models.specs import model_name, resolve_model_spec

            resolved = resolve_model_spec(model)
            if resolved is None:
                raise ValueError(f"model {str(model)!r}: no dense model is available (see the warning above)")
            default_name = model_name(resolved)
            self.model = load_encoder(resolved, backend, precision, default_name)
        else:
            self.model = model
            default_name = _model_name(model)
            if runtime_of(model) is None:  # a model already on a backend is used as it is
                apply_backend(model, *resolve_variant(model, backend, precision, name or default_name))
        similarity = getattr(self.model, "similarity_fn_name", "cosine") or "cosine"
        if similarity not in ("cosine", "dot"):
            raise ValueError(
                f"model {default_name!r} uses similarity {similarity!r}; dense evaluation supports 'cosine' and "
                f"'dot' (set model.similarity_fn_name if the model was trained for one of them)"
            )
        self.normalize = similarity == "cosine"
        self.candidates = candidates
        self.query_prompt, self.query_prompt_source = resolve_prompt(self.model, query_prompt, "query")
        self.passage_prompt, self.passage_prompt_source = resolve_prompt(self.model, passage_prompt, "passage")
        _check_prompts_pooled(self.model, default_name, self.query_prompt, self.passage_prompt)
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.name = name or (default_name if candidates == "context" else f"{default_name}-sentence")
        self.cache = _make_cache(cache)
        self._pool = None
        # (collection, lang) -> (ids, embeddings); one entry per language for queries and candidates.
        self._queries: dict[tuple[str, str], tuple[list[str], torch.Tensor]] = {}
        self._docs: dict[tuple[str, str], tuple[list[str], torch.Tensor]] = {}
        self.encoded_texts = 0  # texts passed through the model (to show reuse in tests / benchmarks)
        self.cached_texts = 0  # texts whose embeddings came from the on-disk cache
        if self.query_prompt_source.startswith("model") or self.passage_prompt_source.startswith("model"):
            log.info("%s: using the model's prompts: query %r (%s), passage %r (%s)", self.name, self.query_prompt,
                     self.query_prompt_source, self.passage_prompt, self.passage_prompt_source)

    def describe(self) -> dict:
        """What defines this system's embeddings besides the model (for results.jsonl and the report)."""
        from mlret_plugin.encoding.backends import variant_of

        backend, precision = variant_of(self.model)
        return {"candidates": self.candidates, "query_prompt": self.query_prompt,
                "query_prompt_source": self.query_prompt_source, "passage_prompt": self.passage_prompt,
                "passage_prompt_source": self.passage_prompt_source, "backend": backend, "precision": precision}

    def clear_cache(self) -> None:
        """Forget in-memory embeddings (call after the model's weights change, e.g. between training epochs).

        The on-disk cache needs no clearing: its entries are keyed by a hash of the weights."""
        self._queries.clear()
        self._docs.clear()

    def close(self) -> None:
        """Stop the multi-process pool, if one was started."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> "DenseRetriever":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- encoding ---------------------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Hash of everything an embedding depends on (weights, tokenizer, modules, attention, settings)."""
        from mlret_plugin.encoding import encoder_fingerprint

        # Prompts are not here: they are part of the input texts, which the entry key hashes.
        return encoder_fingerprint(self.model, normalize=self.normalize, candidates=self.candidates,
                                   batch_size=self.batch_size, devices=self._device_key())

    def _device_key(self) -> list[str]:
        # Which devices and how many workers: a different split into worker chunks changes the last bits
        # (up to ~6e-8 measured on CPU), and a cached run must equal an uncached one bit for bit.
        return list(self.devices) if self.devices else [str(self.model.device)]

    def _encode(self, inputs: list, what: str) -> torch.Tensor:
        key = None
        if self.cache is not None and inputs:
            from mlret_plugin.encoding import entry_key

            key = entry_key(self.fingerprint(), inputs)
            cached = self.cache.get(key)
            if cached is not None:  # the key covers the inputs and their count; the header checked the shape
                self.cached_texts += len(inputs)
                log.info("%s: %d %s from the embedding cache", self.name, len(inputs), what)
                return cached
        self.encoded_texts += len(inputs)
        log.info("encoding %d %s with %s", len(inputs), what, self.name)
        if self.devices:
            if self._pool is None:
                from mlret_plugin.encoding import EncodingPool

                self._pool = EncodingPool(self.model, self.devices)
            embeddings = self._pool.encode(inputs, self.batch_size, self.normalize, self.show_progress_bar)
        else:
            embeddings = self.model.encode(
                inputs,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                show_progress_bar=self.show_progress_bar,
                normalize_embeddings=self.normalize,
            )
        embeddings = embeddings.to(device="cpu", dtype=torch.float32)
        if key is not None:
            try:
                self.cache.put(key, embeddings, {"model": self.name, "what": what, "rows": len(inputs)})
            except OSError as e:  # full or read-only disk: the embeddings are fine, only the cache misses out
                warnings.warn(f"embedding cache: could not write to {self.cache.root} ({e}); continuing without "
                              f"storing. Set MLRET_EMBEDDING_CACHE_DIR to a writable folder or pass --no-cache.",
                              RuntimeWarning, stacklevel=2)
        return embeddings

    def _lang_queries(self, collection: str, lang: str) -> tuple[list[str], torch.Tensor]:
        key = (collection, lang)
        if key not in self._queries:
            queries = list(_lang_subset(collection, lang).load().queries_iter())
            texts = [self.query_prompt + q.text for q in queries]
            self._queries[key] = ([q.query_id for q in queries], self._encode(texts, f"{collection}/{lang} queries"))
        return self._queries[key]

    def _lang_docs(self, collection: str, lang: str) -> tuple[list[str], torch.Tensor]:
        key = (collection, lang)
        if key not in self._docs:
            docs = list(_lang_subset(collection, lang).load().docs_iter())
            if self.candidates == "context":
                inputs = [(self.passage_prompt + d.text, d.context) for d in docs]
            else:
                inputs = [self.passage_prompt + d.text for d in docs]
            self._docs[key] = ([d.doc_id for d in docs], self._encode(inputs, f"{collection}/{lang} candidates"))
        return self._docs[key]

    def encode(self, subset: Subset | str) -> Encoded:
        """Embeddings of a subset's queries (those with a relevant candidate in it) and candidates."""
        subset = as_subset(subset)
        wanted = [q.query_id for q in subset.load().queries_iter()]
        by_id: dict[str, tuple[torch.Tensor, int]] = {}
        for lang in subset.qlangs:
            ids, emb = self._lang_queries(subset.collection, lang)
            by_id.update((qid, (emb, i)) for i, qid in enumerate(ids))
        missing = [q for q in wanted if q not in by_id]
        if missing:
            raise KeyError(f"{subset.dataset_id}: queries {missing[:3]} are not among the encoded queries of {subset.qlangs}")
        doc_ids: list[str] = []
        parts = []
        for lang in subset.dlangs:
            ids, emb = self._lang_docs(subset.collection, lang)
            doc_ids += ids
            parts.append(emb)
        docs = torch.cat(parts)
        queries = torch.stack([by_id[q][0][by_id[q][1]] for q in wanted]) if wanted else docs.new_zeros(0, docs.shape[1])
        return Encoded(wanted, queries, doc_ids, docs)

    # --- search -------------------------------------------------------------------------------------------------
    @staticmethod
    def score_chunks(encoded: Encoded, rows: int = SCORE_CHUNK_ROWS) -> Iterator[tuple[list[str], np.ndarray]]:
        """(query ids, scores [rows x docs]) chunk by chunk: the full score matrix never exists at once."""
        docs_t = encoded.docs.T.contiguous()
        for start in range(0, len(encoded.query_ids), rows):
            scores = (encoded.queries[start:start + rows] @ docs_t).numpy()
            yield encoded.query_ids[start:start + rows], scores

    def run(self, subset: Subset | str, depth: int = 1000) -> dict[str, dict[str, float]]:
        """Top ``depth`` candidates of every query of the subset (exact search)."""
        encoded = self.encode(subset)
        run: dict[str, dict[str, float]] = {}
        for qids, scores in self.score_chunks(encoded):
            _top_k_into(run, qids, scores, encoded.doc_ids, depth)
        return run

    def evaluate_full_depth(
        self, subset: Subset | str, measures: Iterable, qrels: Qrels, run_depth: int = 0
    ) -> tuple[FullDepthEvaluator, dict[str, dict[str, float]]]:
        """Exact full-ranking measures for the subset, and (if run_depth > 0) the top-``run_depth`` run,
        both from one pass over the score chunks."""
        encoded = self.encode(subset)
        evaluator = FullDepthEvaluator(measures, qrels, encoded.doc_ids)
        run: dict[str, dict[str, float]] = {}
        for qids, scores in self.score_chunks(encoded):
            evaluator.add(qids, scores)
            if run_depth > 0:
                _top_k_into(run, qids, scores, encoded.doc_ids, run_depth)
        return evaluator, run


def _top_k_into(run: dict, qids: list[str], scores: np.ndarray, doc_ids: list[str], depth: int) -> None:
    k = min(depth, scores.shape[1])
    if k <= 0:
        for qid in qids:
            run[qid] = {}
        return
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(np.arange(k), (len(qids), 1))
    for i, qid in enumerate(qids):
        cols = top[i]
        run[qid] = {doc_ids[c]: float(scores[i, c]) for c in cols.tolist()}


def _check_prompts_pooled(model, name: str, *prompts: str) -> None:
    # Prompts are prepended as text; a Pooling with include_prompt=False would need ST's prompt lengths.
    if not any(prompts):
        return
    try:
        modules = list(model)
    except TypeError:
        return
    if any(getattr(m, "include_prompt", True) is False for m in modules):
        raise ValueError(f"model {name!r} pools with include_prompt=False, which dense evaluation does not support "
                         "with a prompt; call model.set_pooling_include_prompt(True), or pass --query-prompt '' "
                         "--passage-prompt '' to encode without prompts")


def _make_cache(cache):
    from mlret_plugin.encoding import EmbeddingCache, cache_enabled_by_env

    if cache is None:
        return EmbeddingCache() if cache_enabled_by_env() else None
    if cache is False:
        return None
    if cache is True:
        return EmbeddingCache()
    if isinstance(cache, EmbeddingCache):
        return cache
    if isinstance(cache, (str, Path)):
        return EmbeddingCache(cache)
    raise TypeError(f"cache must be None, a bool, a folder or an EmbeddingCache; got {type(cache).__name__}")


def _model_name(model) -> str:
    card = getattr(model, "model_card_data", None)
    for attr in ("model_name", "base_model"):
        value = getattr(card, attr, None) if card is not None else None
        if value:
            return Path(str(value)).name
    return "dense"
