"""`mlret` entry point. Each subcommand lives in its own module under ``mlret_plugin.cli``.

A subcommand module exposes ``add_parser(subparsers) -> None``; the parser it adds sets
``func=<callable(args) -> int>`` with ``set_defaults``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Order here is the order in `mlret --help`.
SUBCOMMAND_MODULES = [
    "mlret_plugin.cli.datasets",
    "mlret_plugin.cli.evaluate",
    "mlret_plugin.cli.bm25",
    "mlret_plugin.cli.pyserini",
    "mlret_plugin.cli.experiment",
    "mlret_plugin.cli.train",
    "mlret_plugin.cli.cache",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlret", description="Multilingual retrieval research: LAReQA datasets, BM25 and dense evaluation."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
