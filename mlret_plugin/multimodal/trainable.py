"""The model a training run starts from: a text model, or an image-text dual encoder for image-text rows.

``trainable_model`` decides from the data kind and the arguments, and refuses combinations that cannot
train (a text model on image rows without an image tower, an attention pattern on a dual encoder, ...)
with an error naming the fix, before any training starts.
"""
from __future__ import annotations

from pathlib import Path

from mlret_plugin.attention.config import SparsityConfig
from mlret_plugin.model import load_model
from mlret_plugin.models.specs import resolve_model_spec
from mlret_plugin.multimodal.encoder import build_dual_encoder, is_dual_encoder_dir, load_dual_encoder


def trainable_model(spec: str, images: bool = False, image_tower: int | None = None, lock_text: bool = False,
                    attention: SparsityConfig | None = None, attention_backend: str | None = None):
    """``spec`` (folder, hub id, alias) loaded for training on text rows, or on image-text rows (``images``):
    a saved dual encoder as it is, or a text model wrapped into a new one with an ``image_tower``-dimensional
    shared space (``lock_text``: the text tower frozen). ``attention``: a pattern for a text model."""
    resolved = resolve_model_spec(spec)
    if resolved is None:
        raise ValueError(f"model {spec!r}: no model is available (see the warning above)")
    dual = Path(resolved).is_dir() and is_dual_encoder_dir(resolved)
    if lock_text and image_tower is None:
        raise ValueError("lock_text (--lock-text) applies to the new dual encoder of image_tower (--image-tower DIM)")
    if image_tower is not None and image_tower < 1:
        raise ValueError(f"image_tower {image_tower}: expected a dimension >= 1")
    if images or dual:
        if not images:
            raise ValueError(f"model {spec!r}: an image-text dual encoder; train it on image-text rows "
                             "({group_id, lang, query, image})")
        if dual and image_tower is not None:
            raise ValueError(f"model {spec!r} already has an image tower; drop image_tower (--image-tower)")
        if attention is not None:
            raise ValueError("an attention pattern (--attention) applies to text models; not supported with "
                             "image-text training")
        if dual:
            return load_dual_encoder(resolved)
        if image_tower is None:
            raise ValueError(f"the training rows are image-text rows but model {spec!r} is a text model: pass "
                             "image_tower=DIM (--image-tower DIM) to build a dual encoder around it, or a saved dual "
                             "encoder (mlret_plugin.multimodal.build_dual_encoder(...).save(PATH))")
        return build_dual_encoder(load_model(resolved), image_tower, lock_text=lock_text)
    if image_tower is not None:
        raise ValueError("image_tower (--image-tower DIM) needs image-text rows (rows with 'image' in place of "
                         "'passage')")
    if attention is not None:
        return load_model(resolved, attention=attention, backend=attention_backend)
    return load_model(resolved)


__all__ = ["trainable_model"]
