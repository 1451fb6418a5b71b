"""One hybrid training run through the SentenceTransformerTrainer: checkpoints, resume, atomic model save."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Iterable

from mlret_plugin.training.losses import LOSSES, make_loss  # noqa: F401  (make_loss: its home is losses.py)

log = logging.getLogger(__name__)


def freeze_word_embeddings(model) -> int:
    """Stop training the word-embedding matrix of ``model``'s transformer (250k x 384 for e5-small; only the
    rows of tokens seen in training would move); returns how many weights were frozen."""
    module = model[0] if len(model) else None
    hf = getattr(getattr(module, "auto_model", None), "inner", getattr(module, "auto_model", None))
    embeddings = getattr(hf, "get_input_embeddings", lambda: None)()
    if embeddings is None:
        raise ValueError(f"freeze_embeddings: {type(hf).__name__} has no input embeddings to freeze")
    embeddings.weight.requires_grad_(False)
    return embeddings.weight.numel()


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The Trainer's newest ``checkpoint-N`` folder in ``folder`` (transformers' own rule), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(folder)) if Path(folder).is_dir() else None
    return Path(found) if found else None


def process_rank() -> int:
    """This process's global rank under torchrun / accelerate launch (accelerate's ``PartialState``); 0 alone."""
    from accelerate import PartialState

    return PartialState().process_index


def train_hybrid(
    model,
    train_dataset,
    out_dir: str | Path,
    alpha: float = 0.5,
    batch_size: int = 32,
    epochs: float = 1.0,
    max_steps: int = -1,
    languages: Iterable[str] | None = None,
    language_sampling: str = "uniform",
    seed: int = 42,
    learning_rate: float = 2e-5,
    warmup_ratio: float = 0.1,
    save_steps: int = 500,
    resume: bool = False,
    loss: str = "mnrl",
    mini_batch_size: int = 32,
    show_progress: bool = True,
    query_prompt: str | None = None,
    passage_prompt: str | None = None,
    bf16: bool = False,
    freeze_embeddings: bool = False,
    distill_weight: float = 0.0,
    scale: float = 20.0,
    wise_ft: float = 1.0,
    logging_steps: int | None = None,
    callbacks: list | None = None,
) -> Path:
    """Train ``model`` on parallel data with hybrid batches; save it to ``out_dir/model`` and return that path.

    Checkpoints go to ``out_dir/checkpoints`` every ``save_steps``; ``resume=True`` continues from the
    latest one (an error when there is none, so a typo does not silently restart training).
    Queries and passages get the model's own prompts unless ``query_prompt`` / ``passage_prompt`` (also
    "") override them (``mlret_plugin.training.prompts``). ``bf16``: the Trainer's own mixed precision (its
    ``bf16=True``: autocast to bfloat16, fp32 master weights), on a CPU with AVX512_BF16 / AMX or a GPU.
    ``freeze_embeddings``: the word embeddings do not train. ``distill_weight``: the loss's distillation term
    towards the model as it was before training (``training.losses``); ``scale``: the loss's inverse
    temperature (default 20, sentence-transformers'). ``loss="cached-mnrl"`` embeds the sampler's whole batch
    in mini-batches of ``mini_batch_size``: large contrast sizes in bounded memory.
    ``wise_ft`` < 1: the saved (and returned in memory) model is the WiSE-FT interpolation of the start and the
    fine-tuned weights (``training.wise``). ``logging_steps``: how often the Trainer logs the loss (default
    min(50, save_steps)); ``callbacks``: transformers ``TrainerCallback``s (e.g. to record the loss curve).
    """
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    if bf16:
        from mlret_plugin.encoding.backends import check_backend

        check_backend("torch", "bf16", "cuda" if _has_cuda() else "cpu")

    from mlret_plugin.models.pooler import save_keeping_no_pooler
    from mlret_plugin.training.prompts import column_prompts, training_prompts
    from mlret_plugin.training.sampler import HybridBatchSampler

    query, passage = training_prompts(model, query_prompt, passage_prompt)
    if passage and _passages_are_images(train_dataset):
        raise ValueError(f"passage prompt {passage!r}: the passages of this dataset are images, which take no text "
                         "prompt; pass passage_prompt='' (--passage-prompt '')")
    if query or passage:
        log.warning("training prompts: query %r, passage %r", query, passage)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    resume_from = None
    if resume:
        resume_from = latest_checkpoint(ckpt_dir)
        if resume_from is None:
            raise FileNotFoundError(f"resume: no checkpoint-* folder in {ckpt_dir}; start without resume (--resume) instead")
        log.warning("resuming from %s", resume_from)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=batch_size,
        num_train_epochs=epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        warmup_steps=warmup_ratio,
        seed=seed,
        batch_sampler=HybridBatchSampler.factory(alpha=alpha, languages=languages,
                                                 language_sampling=language_sampling),
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=2,
        logging_steps=logging_steps or max(1, min(50, save_steps)),
        report_to="none",
        disable_tqdm=not show_progress,
        use_cpu=not _has_cuda(),
        prompts=column_prompts(query, passage),
        router_mapping=router_mapping(model),
        bf16=bf16,
    )
    if freeze_embeddings:
        log.warning("word embeddings frozen: %d weights do not train", freeze_word_embeddings(model))
    if not 0 <= wise_ft <= 1:
        raise ValueError(f"wise_ft={wise_ft}: expected a weight in [0, 1]")
    from mlret_plugin.training.wise import interpolate, snapshot

    start = snapshot(model) if wise_ft < 1 else None
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, callbacks=callbacks,
                                         loss=make_loss(model, loss, mini_batch_size, distill_weight=distill_weight,
                                                                   scale=scale))
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if start is not None:
        interpolate(model, start, wise_ft)
    final = out_dir / "model"
    tmp = out_dir / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_keeping_no_pooler(model, tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def router_mapping(model) -> dict[str, str] | None:
    """Column -> task for a model with a Router (e.g. the image-text dual encoder): queries are "query",
    passages / negatives "document"; a Router keyed by modality resolves (task, modality) to its route."""
    from sentence_transformers.base.modules import Router

    if not any(isinstance(m, Router) for m in model.children()):
        return None
    return {"anchor": "query", "positive": "document", "negative": "document"}


def _passages_are_images(dataset) -> bool:
    from mlret_plugin.training.image_data import is_image_dataset

    return is_image_dataset(dataset)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
