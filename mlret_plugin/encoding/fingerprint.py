"""What an embedding depends on, as one hash: weights, tokenizer, modules, attention, encoding settings.

The weights are hashed (sha256 over every tensor of the state dict, ~0.15 s for MiniLM), not taken from a
path and mtime: a model fine-tuned in memory (``mlret train --eval``, the experiments' fine-tune grid)
has no file that says what it is. The hash is memoised per model and recomputed as soon as any
parameter or buffer is replaced or modified in place (PyTorch bumps a tensor's ``_version`` on every
in-place write, which covers optimizer steps).
"""
from __future__ import annotations

import hashlib
import json
import weakref

import torch

from mlret_plugin.compat import hf_attn_implementation
from mlret_plugin.encoding.backends import runtime_of

FINGERPRINT_VERSION = 1
_weights_memo: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def _tensor_state(model: torch.nn.Module) -> tuple:
    return tuple((name, id(t), t._version) for name, t in model.state_dict(keep_vars=True).items())


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 of every tensor's name, dtype, shape and bytes (memoised until a tensor changes)."""
    state = _tensor_state(model)
    memo = _weights_memo.get(model)
    if memo is not None and memo[0] == state:
        return memo[1]
    h = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    digest = h.hexdigest()
    _weights_memo[model] = (state, digest)
    return digest


_tokenizer_memo: "weakref.WeakKeyDictionary[object, tuple[int, str]]" = weakref.WeakKeyDictionary()


def tokenizer_hash(tokenizer) -> str:
    """sha256 of the tokenizer's full definition (fast tokenizers) or its vocabulary and init options.

    Memoised per tokenizer object and vocabulary size (XLM-R's definition is ~17 MB of JSON)."""
    if tokenizer is None:
        return "none"
    memo = _tokenizer_memo.get(tokenizer)
    if memo is None or memo[0] != len(tokenizer):
        memo = (len(tokenizer), _tokenizer_hash(tokenizer))
        _tokenizer_memo[tokenizer] = memo
    return memo[1]


def _tokenizer_hash(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # truncation / padding are per-call state the tokenizer keeps from its last call, not its definition.
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
        text = json.dumps(definition, sort_keys=True)
    else:
        text = json.dumps({"vocab": sorted(tokenizer.get_vocab().items()),
                           "init": getattr(tokenizer, "init_kwargs", {})}, sort_keys=True, default=str)
    extra = json.dumps({"max_len": getattr(tokenizer, "model_max_length", None),
                        "padding_side": getattr(tokenizer, "padding_side", None),
                        "truncation_side": getattr(tokenizer, "truncation_side", None)}, default=str)
    return hashlib.sha256((text + extra).encode("utf-8")).hexdigest()


def _module_configs(model) -> list:
    """Each ST module's class and saved config (pooling mode, normalisation, dense layers, ...)."""
    out = []
    for module in model:
        config = dict(module.get_config_dict()) if hasattr(module, "get_config_dict") else {}
        cls = type(module)
        if (config.get("attention") or {}).get("kind") == "dense":
            # The plugin's module in dense mode runs the model's own attention: the same encoder as plain ST, so
            # it is described as the plain Transformer (without the plugin's additions: the pattern, and the
            # model_kwargs it saves to keep a missing pooler, which plain sentence-transformers never saves).
            for key in ("attention", "attention_backend", "model_kwargs"):
                config.pop(key, None)
            cls = cls.__mro__[1]
        auto = getattr(module, "auto_model", None)
        hf_config = auto.config.to_dict() if auto is not None else None
        if hf_config is not None:
            hf_config["_attn_implementation"] = hf_attn_implementation(auto.config)
            hf_config.pop("_name_or_path", None)  # content-addressed: the same weights anywhere are one model
        out.append({"class": f"{cls.__module__}.{cls.__qualname__}", "config": config,
                    "hf_config": hf_config})
    return out


def encoder_fingerprint(model, **settings) -> str:
    """One hex digest for everything that decides an embedding of ``model``.

    ``settings`` are the caller's encoding options (normalisation, candidate mode, prompts, batch size,
    device type...). Library versions are included: a new torch / transformers may change the last bits.
    """
    import sentence_transformers
    import transformers

    description = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "weights": weights_hash(model),
        "tokenizer": tokenizer_hash(getattr(model, "tokenizer", None)),
        "modules": _module_configs(model),
        "max_seq_length": getattr(model, "max_seq_length", None),
        "truncate_dim": getattr(model, "truncate_dim", None),
        "dtype": str(next(model.parameters()).dtype) if any(True for _ in model.parameters()) else None,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "sentence_transformers": sentence_transformers.__version__},
        "settings": settings,
    }
    runtime = runtime_of(model)
    if runtime is not None:  # another backend / precision than torch fp32 (whose keys stay as they were)
        description["runtime"] = runtime
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
