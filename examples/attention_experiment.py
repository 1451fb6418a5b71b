"""Questions A and B on CPU with the offline English MiniLM: dense vs local vs block-sparse attention on
XQuAD-R, clean and noisy contexts, pools of 2 and 3 languages.

Candidates are (sentence, paragraph) pairs, as in LAReQA; noise 1 doubles each paragraph with
same-language distractor sentences from other paragraphs, capped at the model's 256 tokens. The sparse
patterns (window 32 tokens each side; 32-token blocks with a band of 1 block each side) cover far
less than the ~190-token inputs, so they bite. Zero-shot swap by default (--finetune-steps N adds a
short hybrid fine-tune on MLQA-R after each swap). About 30 minutes on 2 quiet CPU cores. Rerunning
resumes from OUT/cells.jsonl.

    python examples/attention_experiment.py [--out mlret-out/attention-example] [--quick]
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
    parser.add_argument("--out", default="mlret-out/attention-example")
    parser.add_argument("--variants", default="dense,local:window=32,block_sparse:block=32")
    parser.add_argument("--noise", default="0,1")
    parser.add_argument("--pool-sizes", default="2,3")
    parser.add_argument("--finetune-steps", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="sentence candidates, no noise, pool of 2, window 8 / block 16 (a smoke run, ~3 min)")
    args = parser.parse_args(argv)
    argv = ["experiment", "attention", "--collection", "xquad-r", "--model", "offline-minilm",
            "--variants", args.variants, "--noise", args.noise, "--pool-sizes", args.pool_sizes,
            "--finetune-steps", str(args.finetune_steps), "--out", args.out]
    if args.quick:
        argv = ["experiment", "attention", "--collection", "xquad-r", "--model", "offline-minilm",
                "--variants", "dense,local:window=8,block_sparse:block=16", "--noise", "0", "--pool-sizes", "2",
                "--candidates", "sentence", "--out", args.out]
    start = time.perf_counter()
    code = main(argv)
    print(f"attention example: {time.perf_counter() - start:.0f} s wall, outputs in {args.out}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(run())
