"""The training recipe's knobs on the command line (``mlret train`` and ``mlret experiment ratio``).

``mlret train`` defaults to the hybrid recipe chosen on MLQA-R dev (``training.recipe.HYBRID_RECIPE``,
docs/training.md "The hybrid recipe"); ``mlret experiment ratio`` keeps sentence-transformers' plain defaults
(``training.recipe.NEUTRAL_RECIPE``), so its grids, cached cells and example parts mean what they meant. Each flag maps to a
``train_hybrid`` / ``RatioGrid.recipe`` knob of the same name.
"""
from __future__ import annotations

import argparse

from mlret_plugin.training.losses import LOSSES
from mlret_plugin.training.recipe import NEUTRAL_RECIPE as NEUTRAL


def add_recipe_arguments(parser: argparse.ArgumentParser, loss_choices: tuple[str, ...] = LOSSES[:2],
                         defaults: dict = NEUTRAL) -> None:
    """The recipe's options, with ``defaults`` (keys of ``NEUTRAL``; switches get a ``--no-`` form)."""
    d = {**NEUTRAL, **{k: v for k, v in defaults.items() if k in NEUTRAL}}
    parser.add_argument("--loss", choices=loss_choices, default=d["loss"],
                        help="in-batch negatives (mnrl), or its cached variant (cached-mnrl: the whole --batch-size "
                             f"contrast in mini-batches of --mini-batch-size, bounded memory); default {d['loss']}")
    parser.add_argument("--mini-batch-size", type=int, default=d["mini_batch_size"],
                        help=f"mini-batch of cached-mnrl (default {d['mini_batch_size']})")
    parser.add_argument("--hard-negatives", action=argparse.BooleanOptionalAction, default=d["hard_negatives"],
                        help="for dataset ids: each pair also gets another sentence of the answer's paragraph as a "
                             "negative (never a relevant sentence)")
    parser.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=d["freeze_embeddings"],
                        help="do not train the word embeddings")
    parser.add_argument("--distill-weight", type=float, default=d["distill_weight"],
                        help="weight of a term keeping embeddings near the untrained model's (0: off; default "
                             f"{d['distill_weight']:g})")
    parser.add_argument("--scale", type=float, default=d["scale"],
                        help="inverse temperature of the in-batch softmax (sentence-transformers' 20; the E5 paper "
                             f"trains at 100, temperature 0.01; default {d['scale']:g})")
    parser.add_argument("--warmup-ratio", type=float, default=d["warmup_ratio"],
                        help=f"share of the steps spent warming up (default {d['warmup_ratio']:g})")
    parser.add_argument("--bf16", action="store_true",
                        help="train in bf16 mixed precision (the Trainer's bf16=True; AVX512_BF16 / AMX or a GPU)")


def recipe_of(args: argparse.Namespace) -> dict:
    """The recipe knobs of parsed arguments (``RatioGrid.recipe`` / ``train_hybrid`` keywords)."""
    return {"loss": args.loss, "mini_batch_size": args.mini_batch_size, "hard_negatives": args.hard_negatives,
            "freeze_embeddings": args.freeze_embeddings, "distill_weight": args.distill_weight,
            "warmup_ratio": args.warmup_ratio, "scale": args.scale, "bf16": args.bf16}
