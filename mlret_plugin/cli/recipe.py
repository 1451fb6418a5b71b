"""The training recipe's knobs on the command line (``mlret train`` and ``mlret experiment ratio``).

Defaults are the recipe chosen on MLQA-R dev (docs/training.md, "The hybrid recipe"); each flag maps to a
``train_hybrid`` / ``RatioGrid.recipe`` knob of the same name.
"""
from __future__ import annotations

import argparse

from mlret_plugin.training.losses import LOSSES


def add_recipe_arguments(parser: argparse.ArgumentParser, loss_choices: tuple[str, ...] = LOSSES[:2]) -> None:
    parser.add_argument("--loss", choices=loss_choices, default="mnrl",
                        help="in-batch negatives (mnrl), or its cached variant (cached-mnrl: the whole --batch-size "
                             "contrast in mini-batches of --mini-batch-size, bounded memory)")
    parser.add_argument("--mini-batch-size", type=int, default=32, help="mini-batch of cached-mnrl")
    parser.add_argument("--hard-negatives", action="store_true",
                        help="for dataset ids: each pair also gets another sentence of the answer's paragraph as a "
                             "negative (never a relevant sentence)")
    parser.add_argument("--freeze-embeddings", action="store_true", help="do not train the word embeddings")
    parser.add_argument("--distill-weight", type=float, default=0.0,
                        help="weight of a term keeping embeddings near the untrained model's (0: off)")
    parser.add_argument("--scale", type=float, default=20.0,
                        help="inverse temperature of the in-batch softmax (default 20 = sentence-transformers'; "
                             "e5 was pre-trained at 100, i.e. temperature 0.01)")
    parser.add_argument("--warmup-ratio", type=float, default=0.1, help="share of the steps spent warming up")
    parser.add_argument("--bf16", action="store_true",
                        help="train in bf16 mixed precision (the Trainer's bf16=True; AVX512_BF16 / AMX or a GPU)")


def recipe_of(args: argparse.Namespace) -> dict:
    """The recipe knobs of parsed arguments (``RatioGrid.recipe`` / ``train_hybrid`` keywords)."""
    return {"loss": args.loss, "mini_batch_size": args.mini_batch_size, "hard_negatives": args.hard_negatives,
            "freeze_embeddings": args.freeze_embeddings, "distill_weight": args.distill_weight,
            "warmup_ratio": args.warmup_ratio, "scale": args.scale, "bf16": args.bf16}
