"""Counts of every registered id, shipped as ``metadata.json`` so ``docs_count()`` works before loading.

Regenerate from a seeded cache with ``python -m mlret_plugin.datasets.metadata``.
"""
from __future__ import annotations

import json
from pathlib import Path

from mlret_plugin.atomic import atomic_write_text
from mlret_plugin.datasets.subsets import dataset_ids, parse_dataset_id


def compute_metadata() -> dict[str, dict[str, dict[str, int]]]:
    from mlret_plugin.datasets.lareqa import build_subset

    out = {}
    for dataset_id in dataset_ids():
        dataset = build_subset(parse_dataset_id(dataset_id))
        out[dataset_id] = {
            "docs": {"count": sum(1 for _ in dataset.docs_iter())},
            "queries": {"count": sum(1 for _ in dataset.queries_iter())},
            "qrels": {"count": sum(1 for _ in dataset.qrels_iter())},
        }
    return out


def main() -> None:
    path = atomic_write_text(Path(__file__).with_name("metadata.json"),
                             json.dumps(compute_metadata(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")  # a development command's output


if __name__ == "__main__":
    main()
