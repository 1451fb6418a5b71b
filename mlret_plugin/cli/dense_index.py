"""`mlret dense-index DATASET_ID --model M`: a FAISS index of the candidates, encoded by the plugin, for
Pyserini's own `search.faiss`; the last line printed is the command that searches it."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mlret_plugin.cli.backends import add_backend_arguments
from mlret_plugin.cli.prompts import add_prompt_arguments
from mlret_plugin.constants import CANDIDATE_KINDS

DEFAULT_RUN_DIR = "mlret-out/faiss-runs"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dense-index", help="a FAISS index of a dataset id for Pyserini's search.faiss, encoded by the plugin",
        description="Encodes DATASET_ID's candidates with the model as `mlret evaluate --model M` does (its prompts, "
                    "pooling and normalisation, through the embedding cache) and writes a FAISS index that "
                    "`python -m pyserini.search.faiss` reads (flat inner product, or HNSW), with the topics, the "
                    "pre-encoded queries and mlret-index.json (model fingerprint, prompts, pooling, candidate mode). "
                    "The last line printed is the `mlret pyserini search.faiss ...` command that writes the run; "
                    "evaluate it with `mlret evaluate DATASET_ID --run FILE`. It uses Pyserini's own query encoder "
                    "where that gives the plugin's query embeddings (checked at build time), else the pre-encoded "
                    "queries, and says which and why.",
    )
    parser.add_argument("dataset_id", metavar="DATASET_ID", help="e.g. xquad-r/en, xquad-r/de-en, xquad-r")
    parser.add_argument("--model", required=True, metavar="M",
                        help="sentence-transformers model: folder, hub id, 'offline-e5', 'offline-minilm', 'default'")
    parser.add_argument("--candidates", choices=CANDIDATE_KINDS, default="context",
                        help="encode a candidate as (sentence, paragraph) pair [default, as LAReQA] or sentence alone")
    add_prompt_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--devices", default=None, metavar="D1,D2", help="encode on these devices (e.g. cuda:0,cuda:1)")
    parser.add_argument("--processes", type=int, default=None, metavar="N", help="encode with N CPU worker processes")
    add_backend_arguments(parser, auto=False)  # Pyserini's own query encoder runs torch fp32
    parser.add_argument("--index-type", choices=("flat", "hnsw"), default="flat",
                        help="flat: exact inner product [default]; hnsw: approximate (IndexHNSWFlat), for large "
                             "collections; its recall@hits against flat on the dataset's queries is measured and printed")
    parser.add_argument("--hnsw-m", type=int, default=32, help="HNSW neighbours per node (default 32)")
    parser.add_argument("--ef-construction", type=int, default=200, help="HNSW efConstruction (default 200)")
    parser.add_argument("--ef-search", type=int, default=None, help="HNSW efSearch (default: --hits)")
    parser.add_argument("--pre-encoded-queries", action="store_true",
                        help="always search with the plugin's pre-encoded queries, even where Pyserini's query "
                             "encoder would give the same embeddings")
    parser.add_argument("--hits", type=int, default=1000, help="hits per query in the printed command (default 1000)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="the index folder (default: under the ir_datasets home, mlret/faiss-indexes)")
    parser.add_argument("--run-output", default=None, metavar="FILE",
                        help=f"the run file the printed command writes (default {DEFAULT_RUN_DIR}/NAME.trec)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlret_plugin.datasets import parse_dataset_id
    from mlret_plugin.evaluation import faiss_index
    from mlret_plugin.evaluation.evaluate import check_data
    from mlret_plugin.evaluation.systems import build_systems, close_systems
    from mlret_plugin.models.specs import resolve_model_spec

    try:
        faiss_index.require_faiss()
        subset = parse_dataset_id(args.dataset_id)
        hnsw = None
        if args.index_type == "hnsw":
            hnsw = faiss_index.check_hnsw(args.hnsw_m, args.ef_construction,
                                          args.ef_search if args.ef_search is not None else args.hits)
        if args.hits < 1:
            raise ValueError(f"--hits must be >= 1; got {args.hits}")
        check_data([subset])
        resolved = resolve_model_spec(args.model)
        if resolved is None:
            raise ValueError(f"--model {args.model}: no dense model is available (see the warning above)")
        model_path = str(Path(resolved).resolve()) if Path(resolved).is_dir() else str(resolved)
        systems = build_systems([model_path], candidates=args.candidates, query_prompt=args.query_prompt,
                                passage_prompt=args.passage_prompt, batch_size=args.batch_size,
                                cache=False if args.no_cache else None, devices=args.devices,
                                processes=args.processes, backend=args.backend, precision=args.precision)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"mlret dense-index: error: {e}", file=sys.stderr)
        return 2
    retriever = systems[0]
    try:
        index_dir, meta, built = faiss_index.build_faiss_index(
            retriever, subset.dataset_id, model_path=model_path, out=args.out, index_type=args.index_type, hnsw=hnsw,
            hits=args.hits)
    except faiss_index.FaissIndexError as e:
        print(f"mlret dense-index: error: {e}", file=sys.stderr)
        return 2
    finally:
        close_systems(systems)
    from mlret_plugin.evaluation.runs import safe_name

    output = args.run_output or f"{DEFAULT_RUN_DIR}/{safe_name(subset.dataset_id)}.{index_dir.name}.trec"
    print(f"{'built' if built else 'found'} {index_dir}: {meta['docs']} candidates of {meta['dataset_id']} "
          f"({meta['model']}, candidates {meta['candidates']}, {meta['index_type']}), {meta['queries']} topics")
    if meta["index_type"] == "hnsw":
        h = meta["hnsw"]
        print(f"HNSW (M {h['m']}, efConstruction {h['ef_construction']}, efSearch {h['ef_search']}): recall@"
              f"{h['recall_k']} against flat {h['recall_vs_flat']:.4f} on the dataset's queries")
    if args.pre_encoded_queries:
        print("queries: the plugin's pre-encoded queries (--pre-encoded-queries)")
    elif meta["query_path"] == faiss_index.PYSERINI_ENCODER:
        check = meta["pyserini_encoder_check"]
        print(f"queries: Pyserini's own query encoder, which gave the plugin's query embeddings within "
              f"{check['max_abs_diff']:.2g} on {check['queries']} queries")
    else:
        print(f"queries: the plugin's pre-encoded queries, because {meta['query_path_reason']}")
    print(f"search it with Pyserini, then `mlret evaluate {meta['dataset_id']} --run {output}`:")
    print(shlex.join(faiss_index.search_command(index_dir, meta, output, args.hits, args.pre_encoded_queries)))
    return 0
