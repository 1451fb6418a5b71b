"""Short hybrid-batch fine-tunes inside a grid: the SentenceTransformerTrainer with the plugin's
``HybridBatchSampler`` and in-batch negatives (MultipleNegativesRankingLoss), for a fixed number of steps.

Used by ``mlret experiment attention --finetune-steps`` (after the attention swap) and by ``mlret
experiment ratio`` (each model size x alpha). The training data is loaded once per grid
(``load_train_data``) and shared by every cell.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def load_train_data(train: str, passage_field: str = "text"):
    """Parallel rows (group_id, lang, query, passage) from an mlret dataset id or a JSONL file."""
    from mlret_plugin.training import load_parallel

    return load_parallel(train, passage_field=passage_field)


def finetune(
    model,
    train_dataset,
    alpha: float,
    max_steps: int,
    batch_size: int = 16,
    learning_rate: float = 2e-5,
    seed: int = 0,
    show_progress_bar: bool = False,
) -> dict:
    """Train ``model`` in place for ``max_steps`` hybrid batches; returns {steps, loss} (last logged loss)."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from mlret_plugin.training import HybridBatchSampler

    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps}; expected >= 1")
    with tempfile.TemporaryDirectory(prefix="mlret-finetune-") as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=str(Path(tmp)),
            batch_sampler=HybridBatchSampler.factory(alpha=alpha),
            per_device_train_batch_size=batch_size,
            max_steps=max_steps,
            learning_rate=learning_rate,
            warmup_steps=max(1, max_steps // 10),
            seed=seed,
            save_strategy="no",
            eval_strategy="no",
            logging_steps=max(1, max_steps // 5),
            report_to="none",
            disable_tqdm=not show_progress_bar,
            use_cpu=not _cuda(),
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=train_dataset, loss=MultipleNegativesRankingLoss(model),
        )
        result = trainer.train()
    model.eval()
    return {"steps": int(result.global_step), "train_loss": float(result.training_loss)}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
