"""`mlret cache info|clear`: the on-disk embedding cache (where it is, how big, per model; empty it)."""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from mlret_plugin.encoding.cache import ENV_DIR, ENV_SWITCH

    cache = subparsers.add_parser(
        "cache", help="the embedding cache: size report, clean",
        description=f"Embeddings of dense models are cached on disk (default IR_DATASETS_HOME/mlret/embeddings; "
                    f"${ENV_DIR} moves it, {ENV_SWITCH}=0 or --no-cache turns it off).",
    )
    sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="location, entries and size per model")
    info.add_argument("--dir", default=None, help="cache folder (default: the configured one)")
    info.set_defaults(func=run_info)
    clear = sub.add_parser("clear", help="delete every cached embedding")
    clear.add_argument("--dir", default=None, help="cache folder (default: the configured one)")
    clear.set_defaults(func=run_clear)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def run_info(args: argparse.Namespace) -> int:
    from mlret_plugin.encoding.cache import EmbeddingCache, cache_enabled_by_env

    stats = EmbeddingCache(args.dir).stats()
    print(f"embedding cache: {stats.root}{'' if cache_enabled_by_env() else ' (disabled by MLRET_EMBEDDING_CACHE)'}")
    print(f"{stats.entries} entries, {_size(stats.bytes)}")
    for model, (entries, size) in stats.by_model.items():
        print(f"  {model}: {entries} entries, {_size(size)}")
    return 0


def run_clear(args: argparse.Namespace) -> int:
    from mlret_plugin.encoding.cache import EmbeddingCache

    cache = EmbeddingCache(args.dir)
    files, size = cache.clear()
    print(f"removed {files} files ({_size(size)}) from {cache.root}", file=sys.stderr)
    return 0
