"""Question C on CPU with the offline English MiniLM: model size x hybrid batch ratio alpha, zero-shot.

Size series: all-MiniLM-L6-v2 truncated to its first 2 / 4 / 6 layers (truncations of one checkpoint,
labelled as such, not separately pre-trained small models). Each (size, alpha) fine-tunes a fresh copy
for --max-steps hybrid batches on MLQA-R and is evaluated on XQuAD-R (en, de, es, vi: the Latin-script
languages, where an English WordPiece vocabulary still sees words), candidates = sentences.
Measured on 2 CPU cores: 28.5 minutes (1,709 s). Rerunning resumes from OUT/cells.jsonl. One training seed
(``--seeds 0``) to stay in that budget: an English-model contrast; the multilingual grid with 3 seeds is
``examples/e5_ratio.py``.

    python examples/ratio_experiment.py [--out mlret-out/ratio-example] [--max-steps 100] [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mlret_plugin.cli.main import main  # noqa: E402


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="mlret-out/ratio-example")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--alphas", default="0,0.5,1")
    parser.add_argument("--eval-langs", default="en,de,es,vi")
    parser.add_argument("--models", default="offline-minilm:layers=2,offline-minilm:layers=4,offline-minilm")
    parser.add_argument("--quick", action="store_true", help="2 sizes, 1 alpha, 5 steps, 2 languages (a smoke run)")
    args = parser.parse_args(argv)
    models = args.models
    alphas, steps, langs = args.alphas, args.max_steps, args.eval_langs
    if args.quick:
        models, alphas, steps, langs = "offline-minilm:layers=2,offline-minilm", "0.5", 5, "en,de"
    start = time.perf_counter()
    code = main(["experiment", "ratio", "--train", "mlqa-r", "--eval", "xquad-r", "--eval-langs", langs,
                 "--models", models, "--alphas", alphas, "--max-steps", str(steps), "--batch-size", "16",
                 "--candidates", "sentence", "--seeds", "0", "--out", args.out])
    print(f"ratio example: {time.perf_counter() - start:.0f} s wall, outputs in {args.out}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(run())
