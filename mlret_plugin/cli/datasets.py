"""`mlret datasets ...`: seed the cache, write topics for Pyserini's CLI, or delegate to ir_datasets' own CLI
with the plugin registered."""
from __future__ import annotations

import argparse

DELEGATED = ("list", "export", "lookup", "doc_fifos")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "datasets",
        help="seed the LAReQA cache; topics for Pyserini's CLI; list / export / lookup through ir_datasets' CLI",
        description=(
            "`mlret datasets seed DIR` copies DIR/{xquad-r,mlqa-r}/{lang}.json into the ir_datasets cache "
            "after an md5 check. `mlret datasets topics ID [--pretokenized]` writes the queries in Pyserini's "
            f"TSV topic format. {', '.join(DELEGATED)} run ir_datasets' own command with the plugin's ids "
            "registered, e.g. `mlret datasets export xquad-r/de-en qrels`."
        ),
    )
    parser.add_argument("action", choices=("seed", "topics") + DELEGATED)
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the action")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from mlret_plugin.datasets.lareqa import UnknownDatasetId

    try:
        if args.action == "seed":
            return _seed(args.args)
        if args.action == "topics":
            return _topics(args.args)
        import ir_datasets

        import mlret_plugin

        mlret_plugin.register()
        ir_datasets.main([args.action, *args.args])
    except (UnknownDatasetId, FileNotFoundError, ValueError) as e:  # bad id or source file: one clear line
        print(f"mlret datasets {args.action}: error: {e}", file=sys.stderr)
        return 2
    return 0


def _seed(argv: list[str]) -> int:
    from mlret_plugin.datasets.seed import seed_cache

    parser = argparse.ArgumentParser(prog="mlret datasets seed")
    parser.add_argument("source_dir", help="a folder holding xquad-r/{lang}.json and/or mlqa-r/{lang}.json")
    ns = parser.parse_args(argv)
    for path in seed_cache(ns.source_dir):
        print(f"seeded {path}")
    return 0


def _topics(argv: list[str]) -> int:
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="mlret datasets topics",
        description="The queries of a dataset id as Pyserini's TSV topics (qid<TAB>text, no header), e.g. "
                    "`mlret datasets topics xquad-r/en > topics.tsv` for `mlret pyserini search.lucene "
                    "--topics topics.tsv` (the file name must end in .tsv or .txt for Pyserini to read it as TSV).",
    )
    parser.add_argument("dataset_id")
    parser.add_argument("--pretokenized", action="store_true",
                        help="write the terms mlret's BM25 analyzer of the candidate language makes of each query, "
                             "for Pyserini's --pretokenized: the only matching query analysis for el / th / vi "
                             "indexes, exact for every language")
    parser.add_argument("-o", "--output", default=None, help="write to this file (atomically) instead of stdout")
    ns = parser.parse_args(argv)
    from mlret_plugin.evaluation.bm25 import pyserini_topics

    topics, dropped = pyserini_topics(ns.dataset_id, pretokenized=ns.pretokenized)
    if dropped:
        print(f"mlret datasets topics: {len(dropped)} of {len(topics) + len(dropped)} queries have no "
              f"{'term left after analysis' if ns.pretokenized else 'text'} and are left out (e.g. {dropped[:2]}); "
              "evaluation counts them as queries with nothing found", file=sys.stderr)
    lines = "".join(f"{qid}\t{text}\n" for qid, text in topics)
    if ns.output is None:
        sys.stdout.write(lines)
        return 0
    from mlret_plugin.evaluation.report import atomic_write_text

    path = atomic_write_text(Path(ns.output), lines)
    print(f"wrote {len(topics)} topics to {path}", file=sys.stderr)
    return 0
