"""The LAReQA table: Mono (mean over languages), Cross (mean over ordered pairs), Multi (the pool).

mAP is average precision over the complete ranking of the candidates (LAReQA; arXiv 2408.10536). Dense
systems are scored at full depth exactly (``FullDepthEvaluator``); systems that only return a ranked
list (BM25) are scored on their top ``bm25_depth`` (documents they do not return count as not found).
MaxRankDist is reported for the pool only: in mono / cross subsets a query has one relevant candidate.
``query_groups`` restricts every setting to the queries of those groups (question ids) while the
candidates stay the whole collection: the held-out split of ``mlret train --holdout-articles``.
``per_query_sink`` collects every subset's per-query values (for paired tests, ``evaluation.stats``);
``write_per_query`` / ``read_per_query`` store them as one gzip JSONL file.
"""
from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path
from typing import Collection, Iterable

from mlret_plugin.atomic import atomic_open
from mlret_plugin.constants import SETTINGS
from mlret_plugin.datasets import Subset, group_id, pool
from mlret_plugin.datasets.subsets import check_langs
from mlret_plugin.evaluation.measures import (
    LAREQA_MEASURES,
    aggregate,
    is_max_rank_dist,
    parse_measures,
    per_query,
    qrels_dict,
    query_lang,
)
from mlret_plugin.evaluation.runs import run_path, write_run

log = logging.getLogger(__name__)



def lareqa_subsets(collection: str, langs: Iterable[str] | None = None) -> dict[str, list[Subset]]:
    """The subsets of each setting over ``langs`` (all the collection's languages by default)."""
    chosen = check_langs(collection, list(langs) if langs is not None else _all_langs(collection))
    return {
        "mono": [Subset(collection, (lang,), (lang,)) for lang in chosen],
        "cross": [Subset(collection, (q,), (d,)) for q in chosen for d in chosen if q != d],
        # One language has no pool distinct from its mono subset (and no MaxRankDist).
        "multi": [pool(collection, chosen)] if len(chosen) > 1 else [],
    }


def _all_langs(collection: str) -> tuple[str, ...]:
    from mlret_plugin.datasets import COLLECTIONS

    if collection not in COLLECTIONS:
        raise ValueError(f"unknown collection {collection!r}; expected one of {sorted(COLLECTIONS)}")
    return COLLECTIONS[collection]


def evaluate_subset(
    retriever, subset: Subset, measures: list, qrels: dict, run_depth: int, bm25_depth: int
) -> tuple[dict, dict]:
    """Per-query values of ``measures`` for one retriever on one subset, and its top-``run_depth`` run."""
    if hasattr(retriever, "evaluate_full_depth"):
        evaluator, run = retriever.evaluate_full_depth(subset, measures, qrels, run_depth=run_depth)
        return evaluator.per_query(), run
    run = retriever.run(subset, depth=max(bm25_depth, run_depth))
    values = per_query(measures, qrels, run)
    top = {q: dict(sorted(docs.items(), key=lambda x: (x[1], x[0]), reverse=True)[:run_depth]) for q, docs in run.items()}
    return values, top


BREAKDOWN = {"mono": "language", "cross": "pair", "multi": "pool"}  # how a setting's subsets are broken down


def subset_rows(system: str, subset: Subset, values: dict, breakdown: str, by_query_lang: bool = True) -> list[dict]:
    """Result rows of one system on one subset from its per-query ``values`` ({measure: {qid: value}}); a pool's
    rows are also broken down by query language (``by_query_lang``)."""
    rows = []
    for measure, per_q in values.items():
        row = {
            "dataset": subset.dataset_id, "system": system, "measure": str(measure),
            "value": aggregate(measure, per_q), "setting": subset.setting, "breakdown": breakdown,
            "qlang": subset.qlangs[0] if len(subset.qlangs) == 1 else "all",
            "dlang": subset.dlangs[0] if len(subset.dlangs) == 1 else "all",
            "queries": len(per_q),
        }
        rows.append(row)
        if by_query_lang and subset.setting == "multi":  # the pool broken down by query language
            by_lang: dict[str, dict[str, float]] = {}
            for qid, value in per_q.items():
                by_lang.setdefault(query_lang(qid), {})[qid] = value
            for lang, lang_values in by_lang.items():
                rows.append({**row, "value": aggregate(measure, lang_values), "breakdown": "query_lang",
                             "qlang": lang, "queries": len(lang_values)})
    return rows


def summary_rows(rows: list[dict], collection_label: str) -> list[dict]:
    """Mono = mean over languages, Cross = mean over ordered pairs, Multi = the pool value."""
    out = []
    keys = sorted({(r["system"], r["setting"], r["measure"]) for r in rows if r["breakdown"] in ("language", "pair", "pool")})
    for system, setting, measure in keys:
        detail = [r for r in rows if (r["system"], r["setting"], r["measure"]) == (system, setting, measure)
                  and r["breakdown"] in ("language", "pair", "pool")]
        value = sum(r["value"] for r in detail) / len(detail)
        out.append({"dataset": collection_label, "system": system, "measure": measure, "value": value,
                    "setting": setting, "breakdown": "summary", "qlang": "all", "dlang": "all",
                    "subsets": len(detail)})
    return out


def run_lareqa(
    collection: str,
    retrievers: list,
    langs: Iterable[str] | None = None,
    out_dir: str | Path | None = None,
    measures: Iterable[str] = LAREQA_MEASURES,
    settings: Iterable[str] = SETTINGS,
    run_depth: int = 10,
    bm25_depth: int = 1000,
    progress: bool = True,
    query_groups: Collection[str] | None = None,
    per_query_sink: list | None = None,
    baseline: str | None = None,
) -> list[dict]:
    """Evaluate retrievers (``.name``, ``.run(subset, depth)``; dense ones also ``evaluate_full_depth``)
    on the LAReQA settings. Returns result rows (summary rows first); writes results.jsonl, runs,
    report.md and heatmaps when ``out_dir`` is given. With ``query_groups``, only queries of those groups
    are judged (and written to runs); a subset left with none of them is skipped with a warning.
    ``per_query_sink``: a list that receives one record per (retriever, subset, measure):
    ``{"system", "setting", "dataset", "measure", "values": {query_id: value}}``; with ``out_dir`` they are
    also written to ``out_dir/per_query.jsonl.gz``. ``baseline``: the name of one retriever; every other
    retriever's Mono / Cross / Multi AP and MaxRankDist are tested against it (``evaluation.paired.test_systems``:
    fields ``p_value``, ``p_holm``, ``ci_low``, ``ci_high``, ... on its summary rows, Holm across all of them),
    and the report lists the tests. ``progress``: log each subset as it starts (INFO)."""
    subsets = lareqa_subsets(collection, langs)
    chosen = tuple(subset.qlangs[0] for subset in subsets["mono"])
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; expected some of {SETTINGS}")
    names = [r.name for r in retrievers]
    if len(set(names)) != len(names):
        raise ValueError(f"retriever names must be unique (they name run files and rows): {names}")
    parsed = parse_measures(measures)
    pair_measures = [m for m in parsed if not is_max_rank_dist(m)]
    label = pool(collection, chosen).dataset_id if len(chosen) > 1 else subsets["mono"][0].dataset_id
    rows: list[dict] = []
    timings: dict[str, float] = {}
    work = [(s, subset) for s in SETTINGS if s in settings for subset in subsets[s]]
    if baseline is not None and baseline not in names:
        raise ValueError(f"baseline={baseline!r} is not among the retrievers {names}")
    paired = baseline is not None and len(retrievers) > 1
    if paired and per_query_sink is None:
        per_query_sink = []
    if query_groups is not None:
        query_groups = frozenset(query_groups)
        if not query_groups:
            raise ValueError("query_groups is empty: no query would be judged")
    for retriever in retrievers:
        start = time.perf_counter()
        for i, (setting, subset) in enumerate(work, start=1):
            if progress:
                log.info("[%s] %d/%d %s", retriever.name, i, len(work), subset.dataset_id)
            qrels = qrels_dict(subset.load().qrels_iter())
            if query_groups is not None:
                qrels = {q: docs for q, docs in qrels.items() if group_id(q) in query_groups}
                if not qrels:
                    log.warning("%s: none of the %d held-out groups has a query here; skipped", subset.dataset_id,
                                len(query_groups))
                    continue
            chosen_measures = parsed if setting == "multi" else pair_measures
            values, run = evaluate_subset(retriever, subset, chosen_measures, qrels, run_depth, bm25_depth)
            breakdown = BREAKDOWN[setting]
            if query_groups is not None:
                run = {q: docs for q, docs in run.items() if q in qrels}
            rows += subset_rows(retriever.name, subset, values, breakdown)
            if per_query_sink is not None:
                per_query_sink += [{"system": retriever.name, "setting": setting, "dataset": subset.dataset_id,
                                    "measure": str(m), "values": v} for m, v in values.items()]
            if out_dir is not None and run_depth > 0:
                write_run(run, run_path(out_dir, retriever.name, subset.dataset_id), tag=_tag(retriever.name))
        timings[retriever.name] = time.perf_counter() - start
    result = summary_rows(rows, label) + rows
    note = None
    if query_groups is not None:
        for row in result:
            row["query_groups"] = len(query_groups)
        note = (f"Queries restricted to {len(query_groups)} held-out groups (question ids); candidates are the "
                "whole collection.")
    if paired:
        from mlret_plugin.evaluation.paired import test_systems

        test_systems(result, per_query_sink, baseline=baseline)
    if out_dir is not None:
        from mlret_plugin.evaluation.report import system_settings, write_lareqa_outputs

        write_lareqa_outputs(result, Path(out_dir), collection=collection, langs=chosen, timings=timings, note=note,
                             systems=system_settings(retrievers))
        if per_query_sink is not None:
            write_per_query(per_query_sink, Path(out_dir) / "per_query.jsonl.gz")
    return result


def per_query_jsonl(records: Iterable[dict]) -> bytes:
    """Per-query records as compact UTF-8 JSONL, the one encoding of every per-query file (gzip or xz)."""
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records).encode("utf-8")


def write_per_query(records: Iterable[dict], path: str | Path) -> Path:
    """Per-query records as gzip JSONL, written to a temporary file and renamed (never half-written)."""
    path = Path(path)
    with atomic_open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(per_query_jsonl(records))
    return path


def read_per_query(path: str | Path) -> list[dict]:
    """Records written by ``write_per_query``; a clear error for a missing or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: per-query values not found (delete the cell from cells.jsonl, or the "
                                "whole --out folder, to recompute it)")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, EOFError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a per-query values file ({e})") from e


def _tag(name: str) -> str:
    return "".join(c if not c.isspace() else "_" for c in name) or "run"
