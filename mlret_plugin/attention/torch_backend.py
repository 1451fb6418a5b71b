"""Block-sparse attention in plain PyTorch: any device, autograd backward, fast on CPU.

Only the listed blocks are computed, and always through the fused ``scaled_dot_product_attention``
(on CPU its flash kernel) on 4-D tensors, because that is where PyTorch is fast:

- ``banded`` (layouts with a token window, i.e. the local pattern): query blocks go along SDPA's head
  dimension (``[B*H, n_blocks, qb, D]``, a free view) and each block's keys are a strided view into the
  padded key tensor (``unfold``: no copy). One band mask ``[1, n_blocks, qb, span]`` broadcasts over
  batch and heads; with key padding the batch is looped so the mask still broadcasts over heads. Global
  tokens add their keys to every block (one copy) and their query rows run densely.
- ``gathered`` (any layout): the listed key blocks of each query block are gathered (``[B*H, n_blocks,
  max_nnz*block, D]``), with a query-independent mask for the -1 padding and key padding. Rows that list
  more than half of all blocks (global rows) run densely instead, so they do not inflate ``max_nnz``.
- ``dense_cover``: when the blocked formulation would compute at least as many scores as plain attention
  (short sequences, where the band covers everything), plain SDPA with the exact token mask is the
  fastest correct choice.

Query rows whose keys are all masked (a block made only of padding) get their listed keys unmasked so
every backend returns finite values there; those rows are padding, their outputs are meaningless.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from mlret_plugin.attention.layout import BlockLayout

PATHS = ("auto", "banded", "gathered", "dense_cover")
BAND_QUERY_BLOCK = 32  # query tile of the banded path; 32 and 64 measured best on CPU (benchmarks/attention.py)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    path: str = "auto",
) -> torch.Tensor:
    """Attention of ``q, k, v`` [B, H, L, D] restricted to ``layout``; key_padding_mask bool [B, L] (True = real)."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}; got {path!r}")
    L = q.shape[2]
    if key_padding_mask is not None and bool(key_padding_mask.all()):
        key_padding_mask = None  # nothing to mask: keeps the batched fast path
    if path == "auto":
        path = choose_path(layout, L)
    elif path == "gathered":
        path = "gathered_all"
    if path == "banded":
        if layout.window is None:
            raise ValueError("the banded path needs a layout with a token window (the local pattern)")
        return _banded(q, k, v, layout.window, layout.num_global, key_padding_mask, scale, dropout_p)
    if path in ("gathered", "gathered_all"):
        # Forced 'gathered' gathers every row; 'auto' runs global (heavy) rows densely.
        return _gathered(q, k, v, layout, key_padding_mask, scale, dropout_p, split_heavy=(path == "gathered"))
    return _dense_cover(q, k, v, layout, key_padding_mask, scale, dropout_p)


def choose_path(layout: BlockLayout, seq_len: int) -> str:
    """The cheapest correct path: blocked unless it would compute as many scores as dense attention."""
    if layout.window is not None:
        qb = BAND_QUERY_BLOCK
        span = qb + 2 * layout.window + layout.num_global
        return "banded" if span < seq_len else "dense_cover"
    light_nnz = int(layout.nnz[layout.nnz * 2 <= layout.n_blocks].max()) if bool(
        (layout.nnz * 2 <= layout.n_blocks).any()) else layout.n_blocks
    return "gathered" if light_nnz * 2 <= layout.n_blocks else "dense_cover"


# ---------------------------------------------------------------------------------------------- banded


@lru_cache(maxsize=64)
def _band_mask(seq_len: int, qb: int, window: int, num_global: int, device: torch.device) -> torch.Tensor:
    """Bool [n_blocks, qb, span]: key s of block i (token i*qb - window + s) is within the window of query t."""
    n = -(-seq_len // qb)
    span = qb + 2 * window
    t = torch.arange(qb)[:, None]
    s = torch.arange(span)[None, :]
    pos = torch.arange(n)[:, None, None] * qb - window + s[None]  # key token of each band slot
    band = (s >= t) & (s <= t + 2 * window)
    # Keys outside the sequence are padding; global keys are handled separately (not twice).
    return (band[None] & (pos >= num_global) & (pos < seq_len)).to(device)


def _banded(q, k, v, window, num_global, kpm, scale, dropout_p):
    B, H, L, D = q.shape
    qb = BAND_QUERY_BLOCK
    n = -(-L // qb)
    Lp = n * qb
    span = qb + 2 * window
    # Left pad by the window, right pad to whole blocks plus the window: block i's keys start at i*qb.
    qp = F.pad(q, (0, 0, 0, Lp - L)).reshape(B * H, n, qb, D)
    kw = F.pad(k, (0, 0, window, Lp - L + window)).unfold(2, span, qb).transpose(-1, -2)  # [B,H,n,span,D] view
    vw = F.pad(v, (0, 0, window, Lp - L + window)).unfold(2, span, qb).transpose(-1, -2)
    band = _band_mask(L, qb, window, num_global, q.device)  # [n, qb, span]
    g = num_global
    if g:
        # Global keys join every block's key set (their band copies are masked out in _band_mask).
        kw = torch.cat([k[:, :, None, :g].expand(B, H, n, g, D), kw], dim=3)
        vw = torch.cat([v[:, :, None, :g].expand(B, H, n, g, D), vw], dim=3)
        band = torch.cat([band.new_ones(n, qb, g), band], dim=2)
    kw = kw.reshape(B * H, n, -1, D)
    vw = vw.reshape(B * H, n, -1, D)
    if kpm is None:
        out = F.scaled_dot_product_attention(qp, kw, vw, attn_mask=band[None], dropout_p=dropout_p, scale=scale)
        out = out.reshape(B, H, Lp, D)
    else:
        keys = F.pad(kpm, (window, Lp - L + window)).unfold(1, span, qb)  # [B, n, span]
        if g:
            keys = torch.cat([kpm[:, None, :g].expand(B, n, g), keys], dim=2)
        masks = band[None] & keys[:, :, None, :]  # [B, n, qb, keys]
        # A padding query whose window holds only padding: let it see its own slot (finite output).
        diag = torch.zeros(qb, masks.shape[-1], dtype=torch.bool, device=q.device)
        diag[torch.arange(qb), g + window + torch.arange(qb)] = True
        masks = masks | (diag & ~masks.any(-1, keepdim=True))
        outs = [
            F.scaled_dot_product_attention(
                qp[b * H:(b + 1) * H], kw[b * H:(b + 1) * H], vw[b * H:(b + 1) * H],
                attn_mask=masks[b][None], dropout_p=dropout_p, scale=scale)
            for b in range(B)
        ]
        out = torch.stack(outs).reshape(B, H, Lp, D)
    out = out[:, :, :L]
    if g:
        # Global query rows attend to every (real) key.
        mask = None if kpm is None else kpm[:, None, None, :]
        out_g = F.scaled_dot_product_attention(q[:, :, :g], k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
        out = torch.cat([out_g, out[:, :, g:]], dim=2)
    return out


# -------------------------------------------------------------------------------------------- gathered


def _layout_on(layout: BlockLayout, device: torch.device):
    return layout.lut.to(device=device, dtype=torch.long), layout.nnz.to(device)


def _gathered(q, k, v, layout: BlockLayout, kpm, scale, dropout_p, split_heavy=True):
    B, H, L, D = q.shape
    b, n = layout.block, layout.n_blocks
    Lp = n * b
    Hl = layout.heads
    if Hl not in (1, H):
        raise ValueError(f"layout has {Hl} heads; expected 1 (shared) or {H}")
    lut, nnz = _layout_on(layout, q.device)
    heavy = (nnz * 2 > n).any(0) if split_heavy else torch.zeros(n, dtype=torch.bool, device=q.device)
    light_rows = (~heavy).nonzero().flatten()
    heavy_rows = heavy.nonzero().flatten()
    qp = F.pad(q, (0, 0, 0, Lp - L)).reshape(B, H, n, b, D)
    kp = F.pad(k, (0, 0, 0, Lp - L))
    vp = F.pad(v, (0, 0, 0, Lp - L))
    real = torch.arange(Lp, device=q.device) < L  # [Lp] keys inside the sequence
    keys_real = real[None].expand(B, Lp) if kpm is None else F.pad(kpm, (0, Lp - L))  # [B, Lp]
    pieces = []
    if light_rows.numel():
        pieces.append((light_rows, _gathered_rows(qp, kp, vp, layout, lut[:, light_rows], keys_real, light_rows,
                                                  scale, dropout_p)))
    if heavy_rows.numel():
        pieces.append((heavy_rows, _dense_rows(qp, kp, vp, layout, heavy_rows, keys_real, scale, dropout_p)))
    if len(pieces) == 1:
        out = pieces[0][1]
    else:
        order = torch.cat([rows for rows, _ in pieces]).argsort()
        out = torch.cat([o for _, o in pieces], dim=2)[:, :, order]
    return out.reshape(B, H, Lp, D)[:, :, :L]


def _gathered_rows(qp, kp, vp, layout, lut, keys_real, rows, scale, dropout_p):
    """Query blocks ``rows`` against their listed key blocks. Returns [B, H, len(rows), b, D]."""
    B, H, n, b, D = qp.shape
    Hl, R, _ = lut.shape
    max_nnz = max(int(layout.nnz[:, rows.cpu()].max()), 1)
    lut = lut[..., :max_nnz]
    valid = lut >= 0
    idx = lut.clamp(min=0)  # [Hl, R, m]
    kb = kp.reshape(B, H, n, b, D)
    vb = vp.reshape(B, H, n, b, D)
    if Hl == 1:
        kg, vg = kb[:, :, idx[0]], vb[:, :, idx[0]]  # [B, H, R, m, b, D]
    else:
        heads = torch.arange(H, device=qp.device)[:, None, None]
        kg, vg = kb[:, heads, idx], vb[:, heads, idx]
    kg = kg.reshape(B * H, R, max_nnz * b, D)
    vg = vg.reshape(B * H, R, max_nnz * b, D)
    # Query-independent mask: listed slots holding real (non-padding, in-sequence) keys.
    key_ok = keys_real.reshape(B, n, b)[:, idx]  # [B, Hl, R, m, b]
    listed = valid[..., None].expand(Hl, R, max_nnz, b).reshape(Hl, R, 1, max_nnz * b)
    if layout.window is not None:
        qpos = rows[:, None] * b + torch.arange(b, device=qp.device)  # [R, b]
        kpos = (idx[..., None] * b + torch.arange(b, device=qp.device)).reshape(Hl, R, 1, -1)
        listed = listed & _token_rule(qpos[None, :, :, None], kpos, layout.window, layout.num_global)
    mask = listed[None] & key_ok.reshape(B, Hl, R, 1, max_nnz * b)
    empty = ~mask.any(-1, keepdim=True)
    mask = mask | (empty & listed[None])
    q_dim = mask.shape[3]
    mask = mask.expand(B, H, R, q_dim, max_nnz * b).reshape(B * H, R, q_dim, max_nnz * b)
    qr = qp[:, :, rows].reshape(B * H, R, b, D)
    out = F.scaled_dot_product_attention(qr, kg, vg, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return out.reshape(B, H, R, b, D)


def _dense_rows(qp, kp, vp, layout, rows, keys_real, scale, dropout_p):
    """Query blocks ``rows`` (global rows) against all keys with their block mask. Returns [B, H, R, b, D]."""
    B, H, n, b, D = qp.shape
    R = rows.numel()
    listed = layout.block_mask().to(qp.device)[:, rows].repeat_interleave(b, -1)[:, :, None, :]  # [Hl, R, 1, Lp]
    if layout.window is not None:
        qpos = rows[:, None] * b + torch.arange(b, device=qp.device)  # [R, b]
        kpos = torch.arange(n * b, device=qp.device)
        listed = listed & _token_rule(qpos[None, :, :, None], kpos, layout.window, layout.num_global)
    mask = listed[None] & keys_real[:, None, None, None, :]  # [B, Hl, R, 1 or b, Lp]
    empty = ~mask.any(-1, keepdim=True)
    mask = mask | (empty & listed[None])
    mask = mask.expand(B, H, R, b, mask.shape[-1]).reshape(B, H, R * b, -1)
    qr = qp[:, :, rows].reshape(B, H, R * b, D)
    out = F.scaled_dot_product_attention(qr, kp, vp, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    return out.reshape(B, H, R, b, D)


def _token_rule(qpos, kpos, window, num_global):
    """The token-exact local rule of BlockLayout: |i - j| <= window or either is a global token."""
    return ((qpos - kpos).abs() <= window) | (qpos < num_global) | (kpos < num_global)


# ----------------------------------------------------------------------------------------- dense cover


def _dense_cover(q, k, v, layout: BlockLayout, kpm, scale, dropout_p):
    B, H, L, D = q.shape
    pattern = layout.token_mask().to(q.device)  # [Hl, L, L]
    mask = pattern[None] if kpm is None else pattern[None] & kpm[:, None, None, :]
    if kpm is not None:
        empty = ~mask.any(-1, keepdim=True)
        mask = mask | (empty & pattern[None])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
