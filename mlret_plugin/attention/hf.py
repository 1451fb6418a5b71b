"""The patterns as a transformers attention implementation (``attn_implementation="mlret_sparse"``).

Registered with both ``AttentionInterface`` (the attention function) and ``AttentionMaskInterface`` (the
mask builder): without the mask builder transformers hands ``attention_mask=None`` to unknown
implementations and padding would be silently ignored. Our mask builder returns the 2-D key padding mask.

The pattern lives on the model config as ``config.mlret_attention`` (a dict) and the backend as
``config.mlret_attention_backend``. Layers with their own sliding window (ModernBERT's local layers)
keep it: there the pattern is that window, narrowed to a ``local`` config's window.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from mlret_plugin.attention.config import SparsityConfig
from mlret_plugin.attention.functional import sparse_attention

IMPLEMENTATION = "mlret_sparse"
CONFIG_ATTR = "mlret_attention"
BACKEND_ATTR = "mlret_attention_backend"
_registered = False


@lru_cache(maxsize=64)
def _config_from_items(items: tuple) -> SparsityConfig:
    return SparsityConfig.from_dict(dict(items))


def _module_config(module: torch.nn.Module) -> tuple[SparsityConfig, str]:
    config = getattr(module, "config", None)
    data = getattr(config, CONFIG_ATTR, None)
    if data is None:
        raise RuntimeError(
            f"{type(module).__name__} runs attn_implementation={IMPLEMENTATION!r} but its config has no "
            f"{CONFIG_ATTR!r}; set the pattern with mlret_plugin.set_attention(model, kind, ...)"
        )
    if isinstance(data, SparsityConfig):
        data = data.to_dict()
    return _config_from_items(tuple(sorted(data.items()))), getattr(config, BACKEND_ATTR, "auto")


def mlret_sparse_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: q/k/v [B, H, L, D] -> ([B, L, H, D], None)."""
    if is_causal or getattr(module, "is_causal", False):
        raise ValueError(f"{IMPLEMENTATION} is bidirectional (encoders); {type(module).__name__} asks for causal attention")
    config, backend = _module_config(module)
    if sliding_window is not None:
        # transformers passes flash-style inclusive windows (ModernBERT: config.sliding_window + 1).
        native = sliding_window - 1
        window = native if config.kind != "local" else min(native, config.window)
        config = SparsityConfig(kind="local", window=window, block=config.block)
    kpm = None
    if attention_mask is not None:
        if attention_mask.dim() != 2:
            raise ValueError(f"{IMPLEMENTATION} expects a 2-D key padding mask from its mask builder; got shape "
                             f"{tuple(attention_mask.shape)} (a custom 4-D mask cannot be combined with a sparsity pattern)")
        kpm = attention_mask[:, -key.shape[2]:].to(torch.bool)
    out = sparse_attention(query, key, value, config, key_padding_mask=kpm, backend=backend, scale=scaling,
                           dropout_p=dropout)
    return out.transpose(1, 2).contiguous(), None


def mlret_padding_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function=None,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor | None:
    """transformers mask builder: the bool key padding mask [B, kv_length] (True = real), or None without padding."""
    from transformers.masking_utils import bidirectional_mask_function

    # Plain bidirectional masks, or the bidirectional sliding window (its window reaches the attention as a kwarg).
    if mask_function is not bidirectional_mask_function and kwargs.get("local_size") is None:
        raise ValueError(
            f"{IMPLEMENTATION} supports bidirectional encoder masks only; got mask function "
            f"{getattr(mask_function, '__name__', mask_function)!r} (causal or custom masks are not sparse-attention aware)"
        )
    if q_offset or kv_offset:
        raise ValueError(f"{IMPLEMENTATION} does not support cached / offset attention (q_offset={q_offset}, kv_offset={kv_offset})")
    if attention_mask is None:
        return None
    mask = attention_mask[:, -kv_length:].to(torch.bool)
    if mask.shape != (batch_size, kv_length):
        raise ValueError(f"attention_mask must be [batch, seq] = {(batch_size, kv_length)}; got {tuple(attention_mask.shape)}")
    return None if bool(mask.all()) else mask


def register_with_transformers() -> str:
    """Register the implementation and its mask builder (idempotent). Returns the implementation name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(IMPLEMENTATION, mlret_sparse_attention_forward)
        AttentionMaskInterface.register(IMPLEMENTATION, mlret_padding_mask)
        _registered = True
    return IMPLEMENTATION


# Registered on import: a model unpickled in a worker process (sentence-transformers' multi-process pool
# spawns fresh interpreters) imports this module through mlret_plugin.model and must find the implementation.
register_with_transformers()
