"""TREC run files: ``qid Q0 docid rank score tag`` (the format Pyserini and trec_eval use).

Runs are written atomically (temp file + rename) under predictable names, and read back with
validation, so a run made elsewhere (``python -m pyserini.search.lucene ... --output run.trec``)
can be evaluated beside ours.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from mlret_plugin.atomic import atomic_open

Run = dict[str, dict[str, float]]


class MalformedRunError(ValueError):
    """A run file that is not in TREC format; the message names the file and line."""


def safe_name(text: str) -> str:
    """A file-name-safe form of a system or dataset name: ``xquad-r/de-en`` -> ``xquad-r_de-en``,
    ``xquad-r[en,de]`` -> ``xquad-r_en+de``."""
    text = text.replace("/", "_").replace(",", "+").replace("[", "_").replace("]", "")
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", text)


def run_path(out_dir: str | Path, system: str, dataset_id: str) -> Path:
    """Where the run of ``system`` on ``dataset_id`` lives: ``out_dir/runs/{dataset}.{system}.trec``."""
    return Path(out_dir) / "runs" / f"{safe_name(dataset_id)}.{safe_name(system)}.trec"


def ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """Documents in trec_eval order: score descending, ties by doc_id descending."""
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def _score_text(score: float) -> str:
    # 9 significant digits round-trip a float32 exactly, so ties and order survive the file.
    return format(float(score), ".9g")


def write_run(run: Mapping[str, Mapping[str, float]], path: str | Path, tag: str) -> Path:
    """Write ``run`` ({qid: {docid: score}}) in TREC format atomically; returns the path.

    Queries with no retrieved document cannot appear in a TREC file; evaluation counts them from
    the qrels (as 0), so nothing is lost.
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag {tag!r} must be a non-empty word without whitespace")
    path = Path(path)
    with atomic_open(path) as f:
        for qid, docs in run.items():
            for rank, (doc_id, score) in enumerate(ranked(docs), start=1):
                f.write(f"{qid} Q0 {doc_id} {rank} {_score_text(score)} {tag}\n")
    return path


def read_run(path: str | Path) -> Run:
    """Read a TREC run file into {qid: {docid: score}}; MalformedRunError names the line on bad input."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run file {path} does not exist")
    run: Run = {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.split()
            where = f"{path}:{number}"
            if len(fields) != 6:
                raise MalformedRunError(
                    f"{where}: expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}: {line.rstrip()!r}"
                )
            qid, _q0, doc_id, rank, score, _tag = fields
            try:
                int(rank)
                value = float(score)
            except ValueError:
                raise MalformedRunError(f"{where}: rank {rank!r} must be an integer and score {score!r} a number") from None
            if value != value:  # NaN
                raise MalformedRunError(f"{where}: score is NaN")
            docs = run.setdefault(qid, {})
            if doc_id in docs:
                raise MalformedRunError(f"{where}: document {doc_id!r} appears twice for query {qid!r}")
            docs[doc_id] = value
    if not run:
        raise MalformedRunError(f"{path}: empty run file")
    return run


def check_run(path: str | Path) -> Path:
    """Validate a run file up front (before long work); returns its path."""
    read_run(path)
    return Path(path)
