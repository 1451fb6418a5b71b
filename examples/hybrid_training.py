"""Hybrid batch training with the offline MiniLM on CPU: alpha 0 / 0.5 / 1 at equal steps, MLQA-R -> XQuAD-R.

Trains the English all-MiniLM-L6-v2 (``mlret_plugin.models.offline``) on MLQA-R (all 7 languages; group = question
id, passage = answer sentence) with hybrid batches (arXiv 2408.10536) for the same number of steps and
seed per alpha, then evaluates zero-shot on XQuAD-R: Mono / Cross / Multi mAP and MaxRankDist of the
pool, before training and after each run. CPU budget: texts are cut to 64 tokens while training, and
evaluation uses sentence candidates; pass --eval-langs / --candidates context for the full protocol.
On 2 free cores, 40 steps x 16 pairs per alpha with --eval-langs de,en takes about 15-20 minutes; alphas
can run in parallel processes sharing one --out (--alphas 0 / 0.5 / 1, --no-before in all but one).

    python examples/hybrid_training.py --out mlret-out/hybrid-example --eval-langs de,en --steps 40 --batch-size 16

Needs the LAReQA files in the ir_datasets cache (``mlret datasets seed ../shared/data/lareqa``) or
``--seed-from DIR``. Writes OUT/table.md and OUT/results.jsonl (every row of every evaluation).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ALPHAS = (0.0, 0.5, 1.0)
MEASURES = (("mono", "AP"), ("cross", "AP"), ("multi", "AP"), ("multi", "MaxRankDist"))


def summary(rows: list[dict]) -> dict[tuple[str, str], float]:
    return {(r["setting"], r["measure"]): r["value"] for r in rows if r["breakdown"] == "summary"}


def evaluate(model, name: str, langs: list[str], candidates: str, out: Path) -> list[dict]:
    from mlret_plugin.evaluation.dense import DenseRetriever
    from mlret_plugin.evaluation.lareqa import run_lareqa

    retriever = DenseRetriever(model, candidates=candidates, name=name, show_progress_bar=False)
    return run_lareqa("xquad-r", [retriever], langs=langs, out_dir=out / "eval" / name, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="mlret-out/hybrid-example")
    parser.add_argument("--steps", type=int, default=60, help="training steps per alpha (equal for all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--eval-langs", default="ar,de,en,zh")
    parser.add_argument("--candidates", choices=("sentence", "context"), default="sentence")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--seed-from", default=None, help="seed the ir_datasets cache from DIR/{xquad-r,mlqa-r}")
    parser.add_argument("--alphas", default="0,0.5,1",
                        help="alphas to run here; several processes with one --out can split the work")
    parser.add_argument("--no-before", action="store_true", help="skip the evaluation of the untrained model")
    parser.add_argument("--train-max-length", type=int, default=64,
                        help="max tokens per text while training (CPU budget); evaluation uses the model's own")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from mlret_plugin.models.offline import offline_minilm_path
    from mlret_plugin.training import load_parallel
    from mlret_plugin.training.run import train_hybrid

    if args.seed_from:
        from mlret_plugin.datasets.seed import seed_cache

        seed_cache(Path(args.seed_from))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    langs = args.eval_langs.split(",")
    base_path = str(offline_minilm_path())
    data = load_parallel("mlqa-r", passage_field="text")
    print(f"training rows: {len(data) - 1}; steps per alpha: {args.steps} x {args.batch_size} pairs", flush=True)

    timings: dict[str, float] = {}
    if not args.no_before:
        start = time.perf_counter()
        evaluate(SentenceTransformer(base_path, device="cpu"), "before", langs, args.candidates, out)
        timings["eval before"] = time.perf_counter() - start
    for alpha in (float(a) for a in args.alphas.split(",")):
        torch.manual_seed(args.seed)
        model = SentenceTransformer(base_path, device="cpu")
        eval_length = model.max_seq_length
        model.max_seq_length = args.train_max_length
        name = f"alpha={alpha:g}"
        start = time.perf_counter()
        train_hybrid(model, data, out / f"run-alpha{alpha:g}", alpha=alpha, batch_size=args.batch_size,
                     max_steps=args.steps, seed=args.seed, learning_rate=args.lr, warmup_ratio=0.1,
                     save_steps=10 ** 9, show_progress=False)
        timings[f"train {name}"] = time.perf_counter() - start
        model.max_seq_length = eval_length
        start = time.perf_counter()
        rows = evaluate(model, name, langs, args.candidates, out)
        timings[f"eval {name}"] = time.perf_counter() - start
        print(f"{name}: {summary(rows)}", flush=True)

    # The table covers every system evaluated into OUT so far (this process or another with the same --out).
    results: dict[str, dict] = {}
    all_rows: list[dict] = []
    for name in ["before"] + [f"alpha={a:g}" for a in ALPHAS]:
        path = out / "eval" / name / "results.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            results[name], all_rows = summary(rows), all_rows + rows

    header = "| system | Mono mAP | Cross mAP | Multi mAP | MaxRankDist (Multi) |"
    lines = [f"XQuAD-R ({','.join(langs)}; {args.candidates} candidates), MiniLM trained on MLQA-R "
             f"for {args.steps} steps x {args.batch_size} pairs per alpha (max {args.train_max_length} tokens)",
             "", header, "|---|---|---|---|---|"]
    for name, values in results.items():
        cells = [f"{values.get(key, float('nan')):.4f}" for key in MEASURES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())]
    table = "\n".join(lines)
    print(table)
    for target, text in (("table.md", table + "\n"), ("results.jsonl", "".join(json.dumps(r) + "\n" for r in all_rows))):
        tmp = out / f"{target}.{os.getpid()}.tmp"
        tmp.write_text(text)
        tmp.rename(out / target)


if __name__ == "__main__":
    main()
