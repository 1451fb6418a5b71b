"""BM25 index + search for every XQuAD-R language (mono subsets), with AP, against Pyserini's own searcher.

    python benchmarks/bm25.py                 # all 11 XQuAD-R languages, fresh indexes in a temp folder
    python benchmarks/bm25.py --langs en,th   # some languages
    python benchmarks/bm25.py --no-peer       # skip the Pyserini LuceneSearcher.batch_search comparison

Times: JVM start, index build (Lucene IndexWriter, incl. analysis / Thai segmentation) and search
(``BM25Retriever`` default engine) per language; goal: index + search for all 11 languages <= 60 s on 2
cores. The peer is ``LuceneSearcher.batch_search`` on the same indexes, measured in the same run; the
ratio is peer time / our time (>1: ours is faster), wall and process CPU time (CPU counts the JVM's
threads too, so it is the fairer measure on a busy machine). Both engines are warmed up on the first
language before timing (JIT). AP is ir_measures AP over all queries (depth 1000).
Needs the real data (``mlret datasets seed ../shared/data/lareqa``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", default="xquad-r")
    parser.add_argument("--langs", default=None, help="comma-separated languages (default: all of the collection)")
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="Java threads for the Pyserini peer")
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()

    start = time.perf_counter()
    from mlret_plugin.evaluation.java import start_jvm

    start_jvm()
    jvm_s = time.perf_counter() - start

    import ir_measures

    from mlret_plugin.datasets import COLLECTIONS, Subset
    from mlret_plugin.evaluation.bm25 import BM25Retriever

    langs = args.langs.split(",") if args.langs else list(COLLECTIONS[args.collection])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; JVM start {jvm_s:.1f}s", flush=True)
    with tempfile.TemporaryDirectory(prefix="mlret-bm25-bench-") as cache:
        ours = BM25Retriever(cache_dir=Path(cache), show_progress_bar=False)
        peer = None
        if not args.no_peer:
            t0 = time.perf_counter()
            peer = BM25Retriever(cache_dir=Path(cache), show_progress_bar=False, engine="pyserini", threads=args.threads)
            print(f"peer: importing pyserini.search.lucene {time.perf_counter() - t0:.1f}s", flush=True)
        warm = Subset(args.collection, (langs[0],), (langs[0],))
        t0 = time.perf_counter()
        for retriever in (ours, peer) if peer else (ours,):
            retriever.run(warm, depth=args.depth)  # builds the first index too (untimed)
        print(f"warm-up on {langs[0]} (incl. its index) {time.perf_counter() - t0:.1f}s", flush=True)
        cache_warm = Path(cache) / "warm"
        ours_timed = BM25Retriever(cache_dir=cache_warm, show_progress_bar=False)  # fresh cache: indexes timed
        rows = []
        for lang in langs:
            subset = Subset(args.collection, (lang,), (lang,))
            dataset = subset.load()
            qrels = list(dataset.qrels_iter())
            t0, c0 = time.perf_counter(), time.process_time()
            ours_timed.index_dir(args.collection, lang)
            t1, c1 = time.perf_counter(), time.process_time()
            run = ours_timed.run(subset, depth=args.depth)
            t2, c2 = time.perf_counter(), time.process_time()
            ap = ir_measures.calc_aggregate([ir_measures.AP], qrels, run)[ir_measures.AP]
            rows.append({"lang": lang, "queries": len(run), "hits": sum(map(len, run.values())),
                         "index_s": t1 - t0, "index_cpu_s": c1 - c0, "search_s": t2 - t1, "cpu_s": c2 - c1, "ap": ap, "empty": sum(1 for h in run.values() if not h)})
            print(f"{lang}: index {t1 - t0:.1f}s search {t2 - t1:.1f}s AP {ap:.4f}", flush=True)
        if peer is not None:
            peer.cache_dir = cache_warm  # the indexes just built
            for row in rows:
                subset = Subset(args.collection, (row["lang"],), (row["lang"],))
                t1, c1 = time.perf_counter(), time.process_time()
                peer.run(subset, depth=args.depth)
                row["peer_s"], row["peer_cpu_s"] = time.perf_counter() - t1, time.process_time() - c1

    total_index = sum(r["index_s"] for r in rows)
    total_search = sum(r["search_s"] for r in rows)
    print()
    print("| lang | queries | hits | no hit | index s | search s (CPU s) | AP | Pyserini batch_search s (CPU s) | ratio wall (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peer_cols = "- | -"
        if "peer_s" in r:
            peer_cols = (f"{r['peer_s']:.1f} ({r['peer_cpu_s']:.1f}) | {r['peer_s'] / r['search_s']:.1f}x "
                         f"({r['peer_cpu_s'] / r['cpu_s']:.1f}x)")
        print(f"| {r['lang']} | {r['queries']} | {r['hits']} | {r['empty']} | {r['index_s']:.1f} | "
              f"{r['search_s']:.1f} ({r['cpu_s']:.1f}) | {r['ap']:.4f} | {peer_cols} |")
    total = total_index + total_search
    total_cpu = sum(r["index_cpu_s"] + r["cpu_s"] for r in rows)
    line = (f"total: index {total_index:.1f}s + search {total_search:.1f}s = {total:.1f}s wall, {total_cpu:.1f}s CPU "
            f"(+ JVM {jvm_s:.1f}s); goal <= 60 s")
    if rows and "peer_s" in rows[0]:
        peer_total = sum(r["peer_s"] for r in rows)
        cpu, peer_cpu = sum(r["cpu_s"] for r in rows), sum(r["peer_cpu_s"] for r in rows)
        line += (f"; Pyserini batch_search {peer_total:.1f}s ({peer_total / total_search:.1f}x our search), "
                 f"CPU {peer_cpu:.1f}s vs {cpu:.1f}s ({peer_cpu / cpu:.1f}x)")
    print(line)
    print(f"mean AP {sum(r['ap'] for r in rows) / len(rows):.4f}; load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
