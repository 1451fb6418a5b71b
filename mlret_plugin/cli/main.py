"""`mlret` entry point. Each subcommand lives in its own module under ``mlret_plugin.cli``.

A subcommand module exposes ``add_parser(subparsers) -> None``; the parser it adds sets
``func=<callable(args) -> int>`` with ``set_defaults``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Order here is the order in `mlret --help`.
SUBCOMMAND_MODULES = [
    "mlret_plugin.cli.datasets",
    "mlret_plugin.cli.evaluate",
    "mlret_plugin.cli.bm25",
    "mlret_plugin.cli.pyserini",
    "mlret_plugin.cli.dense_index",
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


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the message (tests capture it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property decides
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """The library reports progress and warnings through ``logging``; a command shows the package's messages
    (INFO and above) on stderr, plainly. They still propagate to the root logger's handlers, which a command
    line process has none of (so nothing is printed twice)."""
    package = logging.getLogger("mlret_plugin")
    if not any(isinstance(h, _StderrHandler) for h in package.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
    package.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Run one ``mlret`` command; returns its exit code (argparse's 2 for a bad argument, 0 for --help)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # this process forks workers; the CLI owns its env
    setup_logging()
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # argparse has printed the usage and the error
        return e.code if isinstance(e.code, int) else 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
