"""Keep "no pooler" across a sentence-transformers save.

sentence-transformers does not save a Transformer module's ``model_kwargs``; a BERT / XLM-R built without
its pooler (``add_pooling_layer=False``, as the offline multilingual-e5-small) would reload with a
randomly initialised one and a "newly initialized" warning. Recording the kwarg in the folder's
``sentence_bert_config.json`` (which sentence-transformers reads back) prevents that.
"""
from __future__ import annotations

import json
from pathlib import Path

NO_POOLER = {"add_pooling_layer": False}


def has_no_pooler(hf_model) -> bool:
    """True for a transformers model that has a ``pooler`` slot left empty."""
    return getattr(hf_model, "pooler", True) is None


def record_no_pooler(folder: str | Path) -> None:
    """Add ``model_kwargs: {add_pooling_layer: false}`` to the saved folder's sentence_bert_config.json."""
    path = Path(folder) / "sentence_bert_config.json"
    config = json.loads(path.read_text(encoding="utf8"))
    config["model_kwargs"] = {**config.get("model_kwargs", {}), **NO_POOLER}
    path.write_text(json.dumps(config, indent=2), encoding="utf8")


def save_keeping_no_pooler(model, folder: str | Path) -> None:
    """``model.save(folder)`` for a SentenceTransformer, recording a missing pooler (see module doc)."""
    model.save(str(folder))
    first = model[0] if len(model) else None
    if has_no_pooler(getattr(first, "auto_model", None)):
        record_no_pooler(folder)
