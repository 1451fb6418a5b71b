"""`mlret train`: hybrid batch training (arXiv 2408.10536), then the LAReQA evaluation of the trained model.

Zero-shot by default: train on one collection (e.g. MLQA-R), evaluate on another (e.g. XQuAD-R).
Everything that can fail fast (ids, files, alpha, languages, the evaluation target) is checked before
the model is loaded.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlret_plugin.cli import types
from mlret_plugin.cli.backends import add_backend_arguments
from mlret_plugin.cli.prompts import add_prompt_arguments
from mlret_plugin.cli.recipe import add_recipe_arguments
from mlret_plugin.constants import CANDIDATE_KINDS, PASSAGE_FIELDS
from mlret_plugin.training.recipe import HYBRID_RECIPE as RECIPE
from mlret_plugin.training.recipe import NEUTRAL_RECIPE
from mlret_plugin.training.run import LOSSES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    tr = subparsers.add_parser(
        "train", help="hybrid batch training (X-X with probability alpha, else X-Y) + LAReQA evaluation",
        description="Train a sentence-transformers model with hybrid batches (in-batch negatives) on parallel "
                    "data, save it to OUT/model, then evaluate it with the LAReQA table (OUT/eval/results.jsonl). "
                    "Resumable from OUT/checkpoints with --resume.",
    )
    tr.add_argument("--train", required=True, metavar="DATASET_ID_OR_FILE",
                    help="an mlret dataset id (e.g. mlqa-r: group = question id, passage = answer sentence) or a "
                         "JSONL file of {group_id, lang, query, passage[, negative]} rows, or of image-text rows "
                         "{group_id, lang, query (caption), image (path, relative to the file)}")
    tr.add_argument("--eval", default=None, metavar="DATASET_ID_OR_FILE",
                    help="collection (or mono/cross id) to evaluate on, e.g. xquad-r; for image-text training a "
                         "JSONL file of held-out image-text rows; required unless --no-eval")
    tr.add_argument("--image-tower", type=int, default=None, metavar="DIM",
                    help="image-text rows: wrap the text --model into a new dual encoder (Router: text -> Dense "
                         "projection, image -> a small CNN) with DIM-dimensional shared embeddings")
    tr.add_argument("--lock-text", action="store_true",
                    help="with --image-tower: freeze the whole text tower and cache its caption embeddings")
    tr.add_argument("--eval-langs", type=types.names, default=None,
                    help="comma-separated languages of the evaluation collection")
    tr.add_argument("--no-eval", action="store_true", help="train and save only")
    tr.add_argument("--model", required=True,
                    help="model folder, hub id, 'offline-e5', 'offline-minilm' or 'default' (as in mlret evaluate)")
    add_prompt_arguments(tr, where=" in training and evaluation")
    tr.add_argument("--attention", default=None, type=types.attention_pattern, metavar="PATTERN",
                    help="attention pattern to train with, saved with the model: KIND[:KEY=VALUE...] with "
                         "SparsityConfig's option names, e.g. local:window=64 or block_sparse:block=32:num_random=2")
    tr.add_argument("--attention-option", action="append", default=[], metavar="KEY=VALUE",
                    help="one more option of --attention (a SparsityConfig field, or backend=auto|torch|triton), "
                         "e.g. window=64; repeatable")
    tr.add_argument("--alpha", type=float, default=0.5, help="probability of a monolingual (X-X) batch (default 0.5)")
    tr.add_argument("--languages", type=types.names, default=None,
                    help="comma-separated training languages (default: all in the data)")
    tr.add_argument("--language-sampling", choices=("uniform", "proportional"), default="uniform")
    tr.add_argument("--passage", choices=PASSAGE_FIELDS, default="text",
                    help="for dataset ids: the answer sentence [default], its paragraph, or both")
    tr.add_argument("--holdout-articles", type=int, default=0, metavar="K",
                    help="hold out K random articles of the training collection (written to OUT/holdout.json); "
                         "with --eval on the same collection, only their questions are evaluated")
    # defaults: the hybrid recipe chosen on MLQA-R dev (training.recipe, docs/training.md)
    steps = tr.add_mutually_exclusive_group()
    steps.add_argument("--epochs", type=float, default=None,
                       help=f"passes over the data (instead of the recipe's --max-steps {RECIPE['max_steps']})")
    steps.add_argument("--max-steps", type=int, default=None,
                       help=f"optimizer steps (default {RECIPE['max_steps']}, the recipe's)")
    tr.add_argument("--batch-size", type=int, default=RECIPE["batch_size"],
                    help=f"pairs per batch (per process): the in-batch contrast (default {RECIPE['batch_size']})")
    tr.add_argument("--lr", type=float, default=RECIPE["learning_rate"],
                    help=f"peak learning rate (default {RECIPE['learning_rate']:g})")
    add_recipe_arguments(tr, loss_choices=LOSSES, defaults=RECIPE)
    tr.add_argument("--wise-ft", type=float, default=RECIPE["wise_ft"], metavar="WEIGHT",
                    help="WiSE-FT: save and evaluate (1 - WEIGHT) * start + WEIGHT * fine-tuned weights (1: "
                         f"the fine-tuned model; default {RECIPE['wise_ft']:g})")
    # unset knobs are filled after the data is read: the recipe for text, plain defaults for image-text rows
    tr.set_defaults(**{dest: None for dest in _KNOBS})
    tr.add_argument("--article-split", action="store_true",
                    help="for dataset ids: split --train by article into train / dev / test (seeded by --split-seed); "
                         "only train articles are trained on; --eval on the same collection evaluates --eval-part")
    tr.add_argument("--split-seed", type=int, default=0, help="seed of --article-split")
    tr.add_argument("--eval-part", choices=("dev", "test"), default="test",
                    help="with --article-split and --eval on the training collection: the part evaluated")
    tr.add_argument("--seed", type=int, default=42)
    tr.add_argument("--save-steps", type=int, default=500)
    tr.add_argument("--resume", action="store_true", help="continue from the latest OUT/checkpoints/checkpoint-*")
    tr.add_argument("--candidates", choices=CANDIDATE_KINDS, default="context",
                    help="evaluation candidates: (sentence, paragraph) [default, as LAReQA] or sentence alone")
    tr.add_argument("--no-cache", action="store_true",
                    help="evaluate without reading or writing the embedding cache (see `mlret cache info`)")
    add_backend_arguments(tr, where=" in the evaluation after training")
    tr.add_argument("--out", required=True, help="output folder")
    tr.set_defaults(func=run_train)


def attention_choice(args: argparse.Namespace):
    """(SparsityConfig or None, attention backend or None) from --attention and --attention-option, checked."""
    from mlret_plugin.attention.config import SparsityConfig
    from mlret_plugin.attention.spec import PatternError, parse_options
    from mlret_plugin.constants import ATTENTION_BACKENDS

    backend = None
    pairs = []
    for pair in args.attention_option:
        key, sep, value = pair.partition("=")
        if key.strip() == "backend" and sep:
            backend = value.strip()
        else:
            pairs.append(pair)
    if args.attention is None:
        if args.attention_option:
            raise ValueError("--attention-option needs --attention PATTERN")
        return None, None
    if backend is not None and backend not in ATTENTION_BACKENDS:
        raise ValueError(f"--attention-option backend={backend}: expected one of {ATTENTION_BACKENDS}")
    kind, options = args.attention
    extra = parse_options(pairs, "--attention-option")
    clash = sorted(set(extra) & set(options))
    if clash:
        raise PatternError(f"--attention-option {clash} repeat options of --attention")
    try:
        return SparsityConfig(kind=kind, **options, **extra), backend
    except (TypeError, ValueError) as e:
        raise ValueError(f"--attention {kind} with options {dict(options, **extra)}: {e}") from None


# argument dest -> recipe key; the recipe was chosen for text retrieval, so image-text rows get PLAIN instead
_KNOBS = {"batch_size": "batch_size", "lr": "learning_rate", "loss": "loss", "mini_batch_size": "mini_batch_size",
          "scale": "scale", "warmup_ratio": "warmup_ratio", "distill_weight": "distill_weight",
          "hard_negatives": "hard_negatives", "freeze_embeddings": "freeze_embeddings", "wise_ft": "wise_ft"}
PLAIN = {**NEUTRAL_RECIPE, "batch_size": 32, "learning_rate": 2e-5, "wise_ft": 1.0}


def fill_defaults(args: argparse.Namespace, images: bool) -> argparse.Namespace:
    """Knobs not given on the command line: the hybrid recipe's for text, ``PLAIN`` for image-text rows."""
    base = PLAIN if images else RECIPE
    for dest, key in _KNOBS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, base[key])
    return args


def steps_of(args: argparse.Namespace, images: bool = False) -> dict:
    """``epochs`` / ``max_steps`` of ``train_hybrid``: --epochs when given, else --max-steps, else the recipe's
    steps (text) or one epoch (image-text rows)."""
    if args.epochs is not None:
        return {"epochs": args.epochs, "max_steps": -1}
    if args.max_steps is None:
        return {"epochs": 1.0, "max_steps": -1 if images else RECIPE["max_steps"]}
    return {"epochs": 1.0, "max_steps": args.max_steps}


def check_args(args: argparse.Namespace):
    """Fail before any work: returns (train subset or None, eval subset or None, eval langs, (pattern, backend))."""
    from mlret_plugin.datasets import parse_dataset_id
    from mlret_plugin.datasets.subsets import check_langs

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha {args.alpha}: expected a probability in [0, 1]")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: expected >= 1")
    from mlret_plugin.encoding.backends import check_backend, choose_variant

    choose_variant(args.backend, args.precision)  # the evaluation's (auto resolves, for the trained model)
    if args.bf16:
        check_backend("torch", "bf16")
    train_is_file = args.train.endswith(".jsonl") or Path(args.train).is_file()
    if train_is_file and not Path(args.train).is_file():
        raise FileNotFoundError(f"--train {args.train}: no such file")
    train_subset = None if train_is_file else parse_dataset_id(args.train)
    if args.holdout_articles and train_subset is None:
        raise ValueError("--holdout-articles needs --train to be a dataset id (articles come from its doc ids)")
    if args.article_split and (train_subset is None or args.holdout_articles):
        raise ValueError("--article-split needs --train to be a dataset id, and replaces --holdout-articles")
    if args.hard_negatives and train_subset is None:
        raise ValueError("--hard-negatives needs --train to be a dataset id (negatives are the answer's paragraph)")
    if args.scale is not None and not args.scale > 0:
        raise ValueError(f"--scale {args.scale}: expected > 0 (the loss's inverse temperature, e.g. 20)")
    if args.wise_ft is not None and not 0 <= args.wise_ft <= 1:
        raise ValueError(f"--wise-ft {args.wise_ft}: expected a weight in [0, 1]")
    if args.lock_text and args.image_tower is None:
        raise ValueError("--lock-text applies to the new dual encoder of --image-tower DIM")
    if args.image_tower is not None and args.image_tower < 1:
        raise ValueError(f"--image-tower {args.image_tower}: expected a dimension >= 1")
    eval_subset, eval_langs = None, None
    if not args.no_eval and args.eval and (args.eval.endswith(".jsonl") or Path(args.eval).is_file()):
        if not Path(args.eval).is_file():
            raise FileNotFoundError(f"--eval {args.eval}: no such file")
        if not train_is_file:
            raise ValueError(f"--eval {args.eval}: a file of image-text rows evaluates image-text training "
                             "(--train FILE.jsonl of image rows); evaluate text training on a dataset id")
        eval_langs = args.eval_langs
    elif not args.no_eval:
        if not args.eval:
            raise ValueError("--eval DATASET_ID is required (e.g. --eval xquad-r), or pass --no-eval")
        eval_subset = parse_dataset_id(args.eval)
        langs = args.eval_langs or sorted(set(eval_subset.qlangs) | set(eval_subset.dlangs))
        eval_langs = list(check_langs(eval_subset.collection, langs))
        if (train_subset is not None and train_subset.collection == eval_subset.collection
                and not args.holdout_articles and not args.article_split):
            raise ValueError(
                f"--train {args.train} and --eval {args.eval} are one collection: the protocol is zero-shot "
                "(train on one collection, evaluate on another, e.g. --train mlqa-r --eval xquad-r), or hold out "
                "articles with --holdout-articles K and evaluate on their questions"
            )
    return train_subset, eval_subset, eval_langs, attention_choice(args)


def run_train(args: argparse.Namespace) -> int:
    try:
        train_subset, eval_subset, eval_langs, (pattern, attention_backend) = check_args(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"mlret train: {e}", file=sys.stderr)
        return 2
    from mlret_plugin.training import load_parallel
    from mlret_plugin.training.run import process_rank, train_hybrid

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held_out, evaluated = None, None  # articles kept out of training; articles whose questions are evaluated
    if args.holdout_articles:
        from mlret_plugin.training.splits import holdout_articles

        held_out = evaluated = holdout_articles(args.train, args.holdout_articles, args.seed)
        record = {"dataset": args.train, "articles": held_out}
    if args.article_split:
        from mlret_plugin.training.splits import article_split

        parts = article_split(args.train, seed=args.split_seed)
        held_out, evaluated = sorted(parts.dev + parts.test), parts.part(args.eval_part)
        record = {"dataset": args.train, "split_seed": args.split_seed, **parts.as_dict()}
    if held_out and not process_rank():  # every rank draws the same articles (seeded); one writes them
        from mlret_plugin.atomic import atomic_write_text

        atomic_write_text(out / "holdout.json", json.dumps(record) + "\n")
    # hard negatives come from a dataset id's paragraphs: the recipe's value only applies there
    if args.hard_negatives is None:
        args.hard_negatives = RECIPE["hard_negatives"] and train_subset is not None
    try:
        data = load_parallel(args.train, passage_field=args.passage, languages=args.languages,
                             exclude_articles=set(held_out) if held_out else None,
                             **({"hard_negatives": True} if args.hard_negatives else {}))
    except (ValueError, FileNotFoundError) as e:
        print(f"mlret train: {e}", file=sys.stderr)
        return 2
    from mlret_plugin.multimodal.trainable import trainable_model
    from mlret_plugin.training.image_data import is_image_dataset

    images = is_image_dataset(data)
    fill_defaults(args, images)
    if images and eval_subset is not None:
        print(f"mlret train: --eval {args.eval}: image-text training is evaluated on a JSONL file of held-out "
              "image-text rows, not on a text collection", file=sys.stderr)
        return 2
    if not images and not args.no_eval and eval_subset is None:
        print(f"mlret train: --eval {args.eval}: a file of image-text rows, but --train {args.train} is text data",
              file=sys.stderr)
        return 2
    try:
        model = trainable_model(args.model, images=images, image_tower=args.image_tower, lock_text=args.lock_text,
                                attention=pattern, attention_backend=attention_backend)
    except ValueError as e:
        print(f"mlret train: {e}", file=sys.stderr)
        return 2
    try:
        saved = train_hybrid(
            model, data, out, alpha=args.alpha, batch_size=args.batch_size, **steps_of(args, images),
            languages=args.languages, language_sampling=args.language_sampling,
            seed=args.seed, learning_rate=args.lr, warmup_ratio=args.warmup_ratio, save_steps=args.save_steps,
            resume=args.resume, loss=args.loss, mini_batch_size=args.mini_batch_size,
            query_prompt=args.query_prompt, passage_prompt=args.passage_prompt, bf16=args.bf16,
            freeze_embeddings=args.freeze_embeddings, distill_weight=args.distill_weight, scale=args.scale,
            wise_ft=args.wise_ft,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"mlret train: {e}", file=sys.stderr)
        return 2
    print(f"model saved to {saved}", file=sys.stderr)
    rank = process_rank()
    if rank and not args.no_eval:  # under torchrun / accelerate every rank gets here; one evaluation is enough
        print(f"mlret train: rank {rank} is done; the evaluation runs on rank 0 only", file=sys.stderr)
        return 0
    if images and not args.no_eval:
        return _evaluate_images(model, args, eval_langs, out)
    if eval_subset is None:
        return 0
    from mlret_plugin.evaluation.dense import DenseRetriever
    from mlret_plugin.evaluation.lareqa import run_lareqa

    retriever = DenseRetriever(model, candidates=args.candidates, name=f"hybrid-alpha{args.alpha:g}",
                               query_prompt=args.query_prompt, passage_prompt=args.passage_prompt,
                               cache=False if args.no_cache else None, backend=args.backend,
                               precision=args.precision)
    query_groups = None
    if evaluated and train_subset.collection == eval_subset.collection:
        from mlret_plugin.training.splits import held_out_groups

        query_groups = held_out_groups(args.train, set(evaluated))
        print(f"evaluating the {len(query_groups)} held-out questions of {len(evaluated)} articles against every "
              f"candidate of {eval_subset.collection}", file=sys.stderr)
    run_lareqa(eval_subset.collection, [retriever], langs=eval_langs, out_dir=out / "eval", query_groups=query_groups)
    print(f"results: {out / 'eval' / 'results.jsonl'}", file=sys.stderr)
    return 0


def _evaluate_images(model, args: argparse.Namespace, langs: list[str] | None, out: Path) -> int:
    """Caption -> image per caption language and image -> caption pool on held-out image-text rows."""
    from mlret_plugin.multimodal.evaluate import evaluate_image_retrieval, write_image_outputs
    from mlret_plugin.training.data import read_jsonl

    try:
        rows = read_jsonl(args.eval)
        base = Path(args.eval).parent
        for row in rows:  # relative image paths resolve against the JSONL's folder, as for --train
            if isinstance(row.get("image"), str) and not Path(row["image"]).is_absolute():
                row["image"] = str(base / row["image"])
        results = evaluate_image_retrieval(model, rows, f"hybrid-alpha{args.alpha:g}", langs=langs)
    except (ValueError, FileNotFoundError) as e:
        print(f"mlret train: --eval {args.eval}: {e}", file=sys.stderr)
        return 2
    write_image_outputs(results, out / "eval", note=f"trained on {args.train}, evaluated on {args.eval}")
    print(f"results: {out / 'eval' / 'results.jsonl'}", file=sys.stderr)
    return 0
