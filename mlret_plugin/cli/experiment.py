"""`mlret experiment attention` (questions A, B) and `mlret experiment ratio` (question C).

Every argument, the data ids and the model (can it swap attention? can it be truncated?) are checked
before the first cell runs. Finished cells are kept in OUT/cells.jsonl: rerunning the same command
resumes an interrupted grid. Commands that share one --out (one seed, alpha or noise level each) join:
each writes the report of every finished cell with the same fixed settings. Reports carry paired tests
(sign-flip randomisation over questions, bootstrap CIs, Holm) against dense / the baseline alpha.
"""
from __future__ import annotations

import argparse
import os
import sys

from mlret_plugin.cli import types
from mlret_plugin.cli.recipe import add_recipe_arguments, recipe_of
from mlret_plugin.constants import ATTENTION_BACKENDS, CANDIDATE_KINDS, PASSAGE_FIELDS
from mlret_plugin.datasets import COLLECTIONS

DEFAULT_VARIANTS = "dense,local:window=64,block_sparse:block=32"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    ex = subparsers.add_parser("experiment", help="research-question grids: attention variants x noise x pool; size x alpha",
                               description="One-command experiments writing OUT/results.jsonl, OUT/report.md, PNG plots "
                                           "and a resumable OUT/cells.jsonl.")
    sub = ex.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)

    at = sub.add_parser(
        "attention", help="dense vs local vs block-sparse attention: Mono/Cross/Multi mAP, MaxRankDist, degradation",
        description="Grid of attention variant x noise level x pool size; degradation vs dense (absolute and "
                    "relative), per language.",
    )
    at.add_argument("--collection", required=True, choices=sorted(COLLECTIONS))
    at.add_argument("--model", required=True, help="sentence-transformers folder, hub id, 'offline-e5' or 'offline-minilm'")
    at.add_argument("--variants", type=types.variants, default=DEFAULT_VARIANTS,
                    help="comma-separated attention patterns KIND[:KEY=VALUE...] with SparsityConfig's option names: "
                         "dense; local:window=W[:num_global=G]; block_sparse:block=B[:band=N:num_global=N:"
                         f"num_random=N:stride=N:per_head=0|1:seed=S] (dense is required; default {DEFAULT_VARIANTS})")
    at.add_argument("--noise", type=types.numbers, default="0,0.5,1",
                    help="noise levels: distractor tokens / original context tokens")
    at.add_argument("--mixed-noise", action="store_true", help="distractors from every language (default: same language)")
    at.add_argument("--pool-sizes", type=types.integers, default=None,
                    help="pool sizes (default 2,4,7,11 for xquad-r, 2,4,7 for mlqa-r); languages: en first, then a "
                         "seeded order, nested")
    at.add_argument("--candidates", choices=CANDIDATE_KINDS, default="context",
                    help="(sentence, paragraph) pairs [default; needed for noise] or the sentence alone")
    at.add_argument("--max-seq-length", type=int, default=None,
                    help="raise / lower the model's max_seq_length (noise is capped there; default: the model's)")
    at.add_argument("--attention-backend", default=None, choices=ATTENTION_BACKENDS,
                    help="what runs the sparse patterns: auto (Triton on CUDA, else torch), torch or triton")
    at.add_argument("--backend", default=None, choices=("torch", "auto", "triton"),
                    help="what runs the model: torch (patterns stay on torch; with it the patterns also run on "
                         "torch's path, as before). auto / triton: the attention backend's former flag (deprecated: "
                         "use --attention-backend)")
    at.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="fp32, or bf16 (torch.autocast; AVX512_BF16 / AMX) for encoding and fine-tuning")
    at.add_argument("--batch-size", type=int, default=32, help="encoding batch size")
    at.add_argument("--finetune-steps", type=int, default=0, help="short hybrid fine-tune after each swap (0: zero-shot)")
    at.add_argument("--finetune-train", default=None, help="training data id / JSONL (default: the other collection)")
    at.add_argument("--finetune-alpha", type=float, default=0.5)
    at.add_argument("--finetune-batch-size", type=int, default=16, help="pairs per fine-tuning batch")
    at.add_argument("--finetune-passages", choices=PASSAGE_FIELDS, default="text+context",
                    help="training passage: the answer sentence with its paragraph [default], or either alone")
    at.add_argument("--seed", type=int, default=0, help="data seed: the noise draws and the pool order")
    at.add_argument("--seeds", type=types.integers, default=None,
                    help="training seeds of --finetune-steps, e.g. 0,1,2 [default with fine-tuning]; one per command "
                         "to split a grid over commands sharing --out")
    at.add_argument("--out", required=True, help="output folder (reuse it to resume)")
    _add_cache_arg(at)
    at.set_defaults(func=run_attention_cli)

    ra = sub.add_parser(
        "ratio", help="model size x hybrid batch ratio alpha (zero-shot), with parameter counts",
        description="Each model x alpha: fine-tune a fresh copy for --max-steps hybrid batches on --train, evaluate "
                    "on --eval. MODEL:layers=N keeps the first N layers (a size series from one checkpoint).",
    )
    ra.add_argument("--train", required=True, help="training data: mlret dataset id (e.g. mlqa-r) or JSONL")
    ra.add_argument("--eval", required=True, choices=sorted(COLLECTIONS) + ["none"],
                    help="zero-shot evaluation collection, or 'none' (a recipe search on --split dev)")
    ra.add_argument("--eval-langs", type=types.names, default=None,
                    help="restrict every evaluation to these languages (comma-separated); the --split / "
                         "--holdout-articles part uses those of them its collection has")
    ra.add_argument("--models", type=types.models, required=True,
                    help="comma-separated models, each PATH_OR_ID[:layers=N], e.g. offline-minilm:layers=2,offline-minilm")
    ra.add_argument("--alphas", type=types.numbers, default="0,0.25,0.5,0.75,1")
    ra.add_argument("--max-steps", type=int, help="training steps of each cell (required unless --only-untrained)")
    ra.add_argument("--batch-size", type=int, default=16, help="pairs per training batch")
    ra.add_argument("--learning-rate", type=float, default=2e-5)
    ra.add_argument("--passage-field", choices=PASSAGE_FIELDS, default="text",
                    help="training passages: the answer sentence [default], its paragraph, or both")
    ra.add_argument("--candidates", choices=CANDIDATE_KINDS, default="sentence",
                    help="evaluation candidates (default sentence: matches the default training passages, and is fast)")
    ra.add_argument("--no-untrained", action="store_true", help="skip the untrained starting point per model")
    ra.add_argument("--test-untrained", action="store_true",
                    help="with an alpha --baseline, also test each trained alpha against the untrained model "
                         "(its cells: this command's or another's sharing --out)")
    ra.add_argument("--only-untrained", action="store_true",
                    help="evaluate only each model's untrained starting point (one part of a grid split over commands)")
    ra.add_argument("--seeds", type=types.integers, default="0,1,2",
                    help="training seeds (default 0,1,2); one per command to split a grid over commands sharing --out")
    ra.add_argument("--baseline", type=types.baseline, default="0.5",
                    help="the alpha every other alpha is tested against (default 0.5), or 'untrained'; an alpha "
                         "outside --alphas when another command sharing --out has finished its cells")
    ra.add_argument("--holdout-articles", type=int, default=0, metavar="K",
                    help="hold K seeded articles of --train out of training and also evaluate on their questions")
    ra.add_argument("--holdout-seed", type=int, default=0, help="seed of the held-out article draw")
    ra.add_argument("--split", choices=("dev", "test"), default=None,
                    help="split --train by article into train / dev / test (seeded; dev and test never trained on) and "
                         "evaluate on this part's questions")
    ra.add_argument("--split-seed", type=int, default=0, help="seed of the article split")
    ra.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="fp32, or bf16 (torch.autocast; AVX512_BF16 / AMX) for evaluating each cell")
    add_recipe_arguments(ra)
    ra.add_argument("--wise-weights", type=types.numbers, default="1",
                    help="also evaluate each trained model at these WiSE-FT weights (1: the fine-tuned model; 0.5: "
                         "halfway back to its starting weights), e.g. 1,0.75,0.5")
    ra.add_argument("--out", required=True, help="output folder (reuse it to resume)")
    _add_cache_arg(ra)
    ra.set_defaults(func=run_ratio_cli)


def _add_cache_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-cache", action="store_true",
                        help="do not read or write the embedding cache (see `mlret cache info`)")


def attention_backend(args: argparse.Namespace) -> str:
    """--attention-backend, or the former meaning of --backend (auto / triton deprecated; torch kept)."""
    if args.backend in ("auto", "triton"):
        print(f"mlret experiment: --backend {args.backend} is deprecated for the attention backend: use "
              f"--attention-backend {args.backend}", file=sys.stderr)
        if args.attention_backend not in (None, args.backend):
            raise SystemExit(f"mlret experiment: --backend {args.backend} and --attention-backend "
                             f"{args.attention_backend} disagree")
        return args.backend
    return args.attention_backend or args.backend or "auto"


def _fail(e: Exception) -> int:
    print(f"mlret experiment: error: {e}", file=sys.stderr)
    return 2


def run_attention_cli(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mlret_plugin.experiments.attention import build_grid, run_attention_grid

    try:
        grid, model = build_grid(
            args.collection, args.model, args.variants, args.noise, args.pool_sizes, args.out,
            seeds=args.seeds, cache=False if args.no_cache else None,
            candidates=args.candidates, mixed_noise=args.mixed_noise, seed=args.seed,
            max_seq_length=args.max_seq_length, batch_size=args.batch_size, backend=attention_backend(args),
            precision=args.precision,
            finetune_steps=args.finetune_steps, finetune_train=args.finetune_train, finetune_alpha=args.finetune_alpha,
            finetune_batch_size=args.finetune_batch_size, finetune_passages=args.finetune_passages,
        )
    except (ValueError, TypeError, FileNotFoundError) as e:
        return _fail(e)
    run_attention_grid(grid, model)
    print((grid.out / "report.md").read_text(encoding="utf-8"))
    return 0


def run_ratio_cli(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from mlret_plugin.experiments.ratio import build_ratio_grid, run_ratio_grid

    if args.max_steps is None and not args.only_untrained:
        return _fail(ValueError("--max-steps is required: the training steps of each cell (only --only-untrained, "
                                "which trains nothing, runs without it)"))
    try:
        grid = build_ratio_grid(
            args.train, None if args.eval == "none" else args.eval, args.models, args.alphas,
            1 if args.max_steps is None else args.max_steps, args.out,
            eval_langs=args.eval_langs,
            seeds=args.seeds, baseline=args.baseline, cache=False if args.no_cache else None,
            candidates=args.candidates, passage_field=args.passage_field, batch_size=args.batch_size,
            learning_rate=args.learning_rate, include_untrained=not args.no_untrained,
            only_untrained=args.only_untrained, holdout_articles=args.holdout_articles,
            holdout_seed=args.holdout_seed, precision=args.precision, split=args.split, split_seed=args.split_seed,
            recipe=recipe_of(args), wise_weights=args.wise_weights, test_untrained=args.test_untrained,
        )
    except (ValueError, TypeError, FileNotFoundError) as e:
        return _fail(e)
    run_ratio_grid(grid)
    print((grid.out / "report.md").read_text(encoding="utf-8"))
    return 0
