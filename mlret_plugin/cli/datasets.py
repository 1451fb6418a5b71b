"""`mlret datasets ...`: seed the cache, or delegate to ir_datasets' own CLI with the plugin registered."""
from __future__ import annotations

import argparse

DELEGATED = ("list", "export", "lookup", "doc_fifos")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "datasets",
        help="seed the LAReQA cache; list / export / lookup through ir_datasets' CLI",
        description=(
            "`mlret datasets seed DIR` copies DIR/{xquad-r,mlqa-r}/{lang}.json into the ir_datasets cache "
            f"after an md5 check. {', '.join(DELEGATED)} run ir_datasets' own command with the plugin's ids "
            "registered, e.g. `mlret datasets export xquad-r/de-en qrels`."
        ),
    )
    parser.add_argument("action", choices=("seed",) + DELEGATED)
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the action")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from mlret_plugin.datasets.lareqa import UnknownDatasetId

    try:
        if args.action == "seed":
            return _seed(args.args)
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
