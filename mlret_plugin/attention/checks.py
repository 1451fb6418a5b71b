"""What every attention backend needs of its inputs, checked before any compute (a leaf: no backend imports)."""
from __future__ import annotations

import torch


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """What every backend needs of q, k, v: 4-D, one shape, dtype and device, at least one position."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 4-D tensor [batch, heads, seq, head_dim]; got {got}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must have the same shape [batch, heads, seq, head_dim]; got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must have the same dtype; got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k, v must be on the same device; got q {q.device}, k {k.device}, v {v.device}")
    if q.shape[2] < 1:
        raise ValueError("sequence length must be >= 1")


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None) -> None:
    """Clear errors for bad shapes / dtypes / devices, before any compute."""
    check_qkv(q, k, v)
    if not q.is_floating_point():
        raise ValueError(f"q, k, v must be floating point; got {q.dtype}")
    check_key_padding_mask(key_padding_mask, q)


def check_key_padding_mask(key_padding_mask: torch.Tensor | None, q: torch.Tensor) -> None:
    """None, or a bool [batch, seq] tensor on q's device (True = real token)."""
    if key_padding_mask is None:
        return
    B, _, L, _ = q.shape
    if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
        raise ValueError("key_padding_mask must be a bool tensor [batch, seq] (True = real token)")
    if tuple(key_padding_mask.shape) != (B, L):
        raise ValueError(f"key_padding_mask must have shape [batch, seq] = {(B, L)}; got "
                         f"{tuple(key_padding_mask.shape)}")
    if key_padding_mask.device != q.device:
        raise ValueError(f"key_padding_mask is on {key_padding_mask.device}, q on {q.device}")


__all__ = ["check_inputs", "check_key_padding_mask", "check_qkv"]
