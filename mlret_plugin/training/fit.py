"""``model.fit`` that keeps hybrid batches.

sentence-transformers 6's ``fit`` turns every DataLoader into a dataset and samples round-robin with its
own batch sampler, which would drop the hybrid sampler. ``HybridDataLoader`` marks a loader as hybrid;
``hybrid_fit`` (and ``HybridFitMixin.fit``, ``enable_hybrid_fit(model)``) trains such a loader through the
SentenceTransformerTrainer with ``HybridBatchSampler`` and delegates everything else to the stock ``fit``.
"""
from __future__ import annotations

import os
import types
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from mlret_plugin.compat import st_scheduler
from mlret_plugin.training.data import is_parallel_dataset
from mlret_plugin.training.prompts import column_prompts, training_prompts
from mlret_plugin.training.sampler import HybridBatchSampler


class HybridDataLoader(DataLoader):
    """A DataLoader over parallel data (``load_parallel``) whose batches come from ``HybridBatchSampler``.

    Iterating it directly yields ``{"anchor": [...], "positive": [...]}`` batches; ``hybrid_fit`` reads its
    settings (``batch_size``, ``alpha``, ``languages``, ``language_sampling``, ``seed``, ``drop_last``).
    """

    def __init__(
        self,
        dataset,
        batch_size: int = 16,
        alpha: float = 0.5,
        languages: Iterable[str] | None = None,
        language_sampling: str = "uniform",
        seed: int = 0,
        drop_last: bool = False,
        **kwargs: Any,
    ):
        if not is_parallel_dataset(dataset):
            raise TypeError("HybridDataLoader needs a dataset from mlret_plugin.training.load_parallel / parallel_dataset")
        self.hybrid = dict(alpha=alpha, languages=None if languages is None else tuple(languages),
                           language_sampling=language_sampling)
        self.hybrid_batch_size, self.hybrid_seed, self.hybrid_drop_last = batch_size, seed, drop_last
        sampler = HybridBatchSampler(dataset, batch_size=batch_size, drop_last=drop_last, seed=seed, world_size=1,
                                     **self.hybrid)
        super().__init__(dataset, batch_sampler=sampler, collate_fn=_columns, **kwargs)


def _columns(rows: list[dict]) -> dict[str, list]:
    return {key: [r[key] for r in rows] for key in rows[0]} if rows else {}


def _is_hybrid(loader: Any) -> bool:
    return isinstance(loader, HybridDataLoader)


def hybrid_fit(
    model,
    train_objectives: Iterable[tuple[DataLoader, nn.Module]],
    evaluator=None,
    epochs: int = 1,
    steps_per_epoch: int | None = None,
    scheduler: str = "WarmupLinear",
    warmup_steps: int = 10000,
    optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW,
    optimizer_params: dict[str, object] | None = None,
    weight_decay: float = 0.01,
    evaluation_steps: int = 0,
    output_path: str | None = None,
    save_best_model: bool = True,
    max_grad_norm: float = 1,
    use_amp: bool = False,
    callback: Callable[[float, int, int], None] | None = None,
    show_progress_bar: bool = True,
    checkpoint_path: str | None = None,
    checkpoint_save_steps: int = 500,
    checkpoint_save_total_limit: int = 0,
    resume_from_checkpoint: bool = False,
    query_prompt: str | None = None,
    passage_prompt: str | None = None,
    _stock_fit: Callable | None = None,
) -> None:
    """``SentenceTransformer.fit`` with the same arguments, honouring a ``HybridDataLoader`` objective.

    A hybrid objective trains with the model's own prompts for queries and passages unless
    ``query_prompt`` / ``passage_prompt`` (also "") override them; other objectives go to the stock
    ``fit``, which uses no prompts (passing a prompt with them is an error)."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.fit_mixin import (
        EvaluatorCallback,
        FitMixin,
        OriginalCallback,
        SaveModelCallback,
    )

    objectives = list(train_objectives)
    optimizer_params = optimizer_params or {"lr": 2e-5}
    if not any(_is_hybrid(loader) for loader, _ in objectives):
        if query_prompt is not None or passage_prompt is not None:
            raise ValueError("query_prompt / passage_prompt apply to a HybridDataLoader objective; sentence-"
                             "transformers' stock fit does not use prompts")
        stock = _stock_fit or types.MethodType(FitMixin.fit, model)
        return stock(objectives, evaluator=evaluator, epochs=epochs, steps_per_epoch=steps_per_epoch,
                     scheduler=scheduler, warmup_steps=warmup_steps, optimizer_class=optimizer_class,
                     optimizer_params=optimizer_params, weight_decay=weight_decay, evaluation_steps=evaluation_steps,
                     output_path=output_path, save_best_model=save_best_model, max_grad_norm=max_grad_norm,
                     use_amp=use_amp, callback=callback, show_progress_bar=show_progress_bar,
                     checkpoint_path=checkpoint_path, checkpoint_save_steps=checkpoint_save_steps,
                     checkpoint_save_total_limit=checkpoint_save_total_limit,
                     resume_from_checkpoint=resume_from_checkpoint)
    if len(objectives) != 1:
        raise ValueError(
            f"fit got {len(objectives)} objectives including a HybridDataLoader; hybrid training supports one "
            "objective (round-robin mixing with other loaders would break the hybrid batch schedule). Use "
            "SentenceTransformerTrainer with a DatasetDict for multi-task training."
        )
    loader, loss = objectives[0]
    max_steps = steps_per_epoch * epochs if steps_per_epoch else -1
    query, passage = training_prompts(model, query_prompt, passage_prompt)
    args = SentenceTransformerTrainingArguments(
        output_dir=checkpoint_path or os.path.join("checkpoints", "hybrid"),
        batch_sampler=HybridBatchSampler.factory(**loader.hybrid),
        per_device_train_batch_size=loader.hybrid_batch_size,
        dataloader_drop_last=loader.hybrid_drop_last,
        seed=loader.hybrid_seed,
        num_train_epochs=epochs,
        max_steps=max_steps,
        eval_strategy="steps" if evaluation_steps and evaluation_steps > 0 else "no",
        eval_steps=evaluation_steps or None,
        max_grad_norm=max_grad_norm,
        fp16=use_amp,
        disable_tqdm=not show_progress_bar,
        save_strategy="steps" if checkpoint_path is not None else "no",
        save_steps=checkpoint_save_steps,
        save_total_limit=checkpoint_save_total_limit or None,
        report_to="none",
        prompts=column_prompts(query, passage),
    )
    steps = max_steps if max_steps > 0 else len(loader) * epochs
    no_decay = ("bias", "LayerNorm.bias", "LayerNorm.weight")
    named = list(nn.ModuleDict({"model": model, "loss": loss}).named_parameters())
    groups = [
        {"params": [p for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = optimizer_class(groups, **optimizer_params)
    lr_scheduler = st_scheduler(optimizer, scheduler=scheduler, warmup_steps=warmup_steps, t_total=steps)
    callbacks = []
    if evaluator is not None:
        callbacks.append(EvaluatorCallback(evaluator, output_path))
        if callback is not None:
            callbacks.append(OriginalCallback(callback, evaluator))
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=loader.dataset, loss=loss, evaluator=evaluator,
        optimizers=(optimizer, lr_scheduler), callbacks=callbacks,
    )
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, EvaluatorCallback):
            cb.trainer = trainer
    if output_path is not None:
        trainer.add_callback(SaveModelCallback(output_path, evaluator, save_best_model))
    resume = None
    if checkpoint_path is not None and resume_from_checkpoint:
        from mlret_plugin.training.run import latest_checkpoint

        found = latest_checkpoint(checkpoint_path)
        resume = str(found) if found else None
    trainer.train(resume_from_checkpoint=resume)
    return None


class HybridFitMixin:
    """Mix into a SentenceTransformer subclass (before it in the MRO) so ``model.fit`` honours HybridDataLoader."""

    def fit(self, train_objectives, **kwargs):
        return hybrid_fit(self, train_objectives, **kwargs)


def enable_hybrid_fit(model):
    """Make ``model.fit`` honour ``HybridDataLoader`` on an existing SentenceTransformer instance; returns it."""
    stock = model.fit
    model.fit = types.MethodType(lambda self, objectives, **kw: hybrid_fit(self, objectives, _stock_fit=stock, **kw),
                                 model)
    return model
