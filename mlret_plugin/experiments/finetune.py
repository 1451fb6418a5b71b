"""Short hybrid-batch fine-tunes inside a grid: ``mlret train``'s ``train_hybrid`` (SentenceTransformerTrainer,
``HybridBatchSampler``, MultipleNegativesRankingLoss) for a fixed number of steps.

Used by ``mlret experiment attention --finetune-steps`` (after the attention swap) and by ``mlret
experiment ratio`` (each model size x alpha). The training data is loaded once per grid
(``load_train_data``) and shared by every cell.
"""
from __future__ import annotations

import tempfile
from pathlib import Path


def load_train_data(train: str, passage_field: str = "text", exclude_articles: set[int] | None = None,
                    hard_negatives: bool = False):
    """Parallel rows (group_id, lang, query, passage[, negative]) from an mlret dataset id or a JSONL file,
    without the questions of ``exclude_articles`` (held out for evaluation)."""
    from mlret_plugin.training import load_parallel

    if hard_negatives:
        return load_parallel(train, passage_field=passage_field, exclude_articles=exclude_articles,
                             hard_negatives=True)
    return load_parallel(train, passage_field=passage_field, exclude_articles=exclude_articles)


def check_batches(train_dataset, batch_size: int, alpha: float) -> None:
    """Build the hybrid sampler once, so too few groups / a bad alpha fail before the grid starts."""
    from mlret_plugin.training import HybridBatchSampler

    HybridBatchSampler(train_dataset, batch_size=batch_size, alpha=alpha, world_size=1)


def finetune(
    model,
    train_dataset,
    alpha: float,
    max_steps: int,
    batch_size: int = 16,
    learning_rate: float = 2e-5,
    seed: int = 0,
    show_progress_bar: bool = False,
    **recipe,
) -> dict:
    """Train ``model`` in place for ``max_steps`` hybrid batches through ``mlret train``'s training function
    (the saved copy goes to a temporary folder and is discarded: the grid evaluates the model in memory).
    ``recipe``: ``train_hybrid``'s other knobs (loss, mini_batch_size, freeze_embeddings, distill_weight,
    warmup_ratio, bf16); ``hard_negatives`` belongs to the data (``load_train_data``)."""
    from mlret_plugin.training.run import train_hybrid

    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps}; expected >= 1")
    with tempfile.TemporaryDirectory(prefix="mlret-finetune-") as tmp:
        train_hybrid(model, train_dataset, Path(tmp), alpha=alpha, batch_size=batch_size, max_steps=max_steps,
                     seed=seed, learning_rate=learning_rate, save_steps=max_steps + 1, show_progress=show_progress_bar,
                     **{k: v for k, v in recipe.items() if k != "hard_negatives"})
    model.eval()
    return {"steps": max_steps, "alpha": alpha, "batch_size": batch_size, "learning_rate": learning_rate, **recipe}
