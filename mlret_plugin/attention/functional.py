"""``sparse_attention``: validated inputs, one pattern, an explicit backend."""
from __future__ import annotations

import importlib
import warnings

import torch
import torch.nn.functional as F

from mlret_plugin.attention.checks import check_inputs, check_key_padding_mask, check_qkv  # noqa: F401
from mlret_plugin.attention.config import SparsityConfig
from mlret_plugin.constants import ATTENTION_BACKENDS
from mlret_plugin.attention.layout import BlockLayout

BACKENDS = ATTENTION_BACKENDS
TRITON_MODULE = "mlret_plugin.attention.triton_kernel"


def triton_available() -> tuple[bool, str]:
    """(True, '') when the Triton kernel module imports; else (False, why)."""
    try:
        importlib.import_module(TRITON_MODULE)
    except ImportError as exc:
        return False, f"{TRITON_MODULE} could not be imported ({exc})"
    return True, ""


def _triton_interpreted() -> bool:
    # Triton's interpreter runs the kernel on CPU tensors: slow, but it proves the HF -> kernel route here.
    from mlret_plugin.attention import triton_kernel

    return triton_kernel.interpreted()


def resolve_backend(backend: str, device: torch.device, dropout_p: float = 0.0) -> str:
    """'auto' -> 'triton' on CUDA, else 'torch'. Explicit choices are checked, never switched.

    On CUDA, 'auto' runs the torch path, with a warning naming the fix, where the kernel cannot: when the
    Triton module does not import, or for attention dropout (training BERT-style models), which the
    kernel does not implement.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if backend == "torch":
        return "torch"
    ok, why = triton_available() if device.type == "cuda" or backend == "triton" else (False, "")
    if backend == "auto":
        if device.type != "cuda":
            return "torch"
        if not ok:
            warnings.warn(f"sparse attention backend='auto' on CUDA: the Triton kernel is unavailable ({why}); "
                          "running the torch backend. Install triton, or pass backend='torch' to choose it explicitly.",
                          RuntimeWarning, stacklevel=3)
            return "torch"
        if dropout_p:
            warnings.warn("sparse attention backend='auto' on CUDA with attention dropout: the Triton kernel has no "
                          "dropout, so this call runs the torch backend. Set the model's attention dropout to 0 to "
                          "train through the kernel, or pass backend='torch' to choose it explicitly.",
                          RuntimeWarning, stacklevel=3)
            return "torch"
        return "triton"
    if device.type != "cuda" and not (ok and device.type == "cpu" and _triton_interpreted()):
        raise RuntimeError(
            f"backend='triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before triton is "
            f"imported); got {device.type}. Use backend='torch' (or 'auto')."
        )
    if not ok:
        raise RuntimeError(f"backend='triton' is not available: {why}. Use backend='torch' (or 'auto').")
    return "triton"


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    config: SparsityConfig,
    key_padding_mask: torch.Tensor | None = None,
    backend: str = "auto",
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Attention over ``q, k, v`` [batch, heads, seq, head_dim] restricted to ``config``'s pattern.

    ``key_padding_mask``: bool [batch, seq], True = real token (padding keys are never attended).
    ``backend``: 'torch' (pure PyTorch, any device, autograd), 'triton' (CUDA kernel), or 'auto'.
    Returns [batch, heads, seq, head_dim].
    """
    if not isinstance(config, SparsityConfig):
        raise TypeError(f"config must be a SparsityConfig; got {type(config).__name__}")
    check_inputs(q, k, v, key_padding_mask)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1); got {dropout_p}")
    chosen = resolve_backend(backend, q.device, dropout_p)
    B, H, L, _ = q.shape
    if chosen == "triton":
        if dropout_p:
            raise NotImplementedError("the Triton kernel has no attention dropout; use backend='torch' for training "
                                      "with dropout, or set the model's attention dropout to 0")
        kernel = importlib.import_module(TRITON_MODULE)
        layout = config.layout(L, H)
        return kernel.block_sparse_attention(q, k, v, layout, key_padding_mask=key_padding_mask, scale=scale)
    if config.kind == "dense":
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    from mlret_plugin.attention.torch_backend import block_sparse_attention

    return block_sparse_attention(q, k, v, config.layout(L, H), key_padding_mask, scale=scale, dropout_p=dropout_p)


def layout_attention(q, k, v, layout: BlockLayout, key_padding_mask=None, scale=None, dropout_p=0.0, path="auto"):
    """The torch path on an explicit BlockLayout (references, tests, benchmarks)."""
    from mlret_plugin.attention.torch_backend import block_sparse_attention

    check_inputs(q, k, v, key_padding_mask)
    if layout.seq_len != q.shape[2]:
        raise ValueError(f"layout is for seq_len={layout.seq_len}; q has {q.shape[2]}")
    return block_sparse_attention(q, k, v, layout, key_padding_mask, scale=scale, dropout_p=dropout_p, path=path)
