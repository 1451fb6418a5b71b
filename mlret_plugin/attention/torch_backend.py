"""Block-sparse attention in plain PyTorch: any device, autograd backward, fast on CPU.

Only the listed blocks are computed, and always through the fused ``scaled_dot_product_attention``
(on CPU its flash kernel) on 4-D tensors, because that is where PyTorch is fast:

- ``banded`` (layouts with a token window, i.e. the local pattern), per sequence: heads go along SDPA's
  batch dimension and query blocks along its head dimension (``[H, n_blocks, qb, D]``, a free view);
  each block's keys are a strided ``unfold`` view into the key tensor (no copy). Interior blocks share
  one cached additive band mask ``[qb, span]`` that broadcasts over heads and blocks (it stays in
  cache); only the few edge blocks, whose band leaves the sequence, get padded keys and their own mask.
  Global tokens add their keys to every block (one copy) and their query rows run densely.
- ``gathered`` (any layout): the listed key blocks of each query block are gathered (``[B*H, n_blocks,
  max_nnz*block, D]``), with a query-independent mask for the -1 padding and key padding. Rows that list
  more than half of all blocks (global rows) run densely instead, so they do not inflate ``max_nnz``.
- ``dense_cover``: when the blocked formulation would compute at least as many scores as plain attention
  (the band covers everything), or the sequence is shorter than ``MIN_BLOCKED_LEN`` (on CPU the blocked
  paths' extra launches and copies cost more than they save there), plain SDPA with the exact token mask
  (an additive float mask, which costs SDPA no more than a padding mask) is the fastest correct choice.
  This is a dispatch, not a fallback: the result is the pattern's. Where the pattern allows every pair
  at this length, SDPA runs with the padding mask only, exactly as the dense model.

Query rows whose keys are all masked (a block made only of padding) get their listed keys unmasked so
every backend returns finite values there; those rows are padding, their outputs are meaningless.
"""
from __future__ import annotations

import logging
from functools import lru_cache

import torch
import torch.nn.functional as F

from mlret_plugin.attention.layout import BlockLayout

log = logging.getLogger(__name__)

PATHS = ("auto", "banded", "gathered", "dense_cover")
BAND_QUERY_BLOCK = 32  # query tile of the banded path; 32 and 64 measured best on CPU (benchmarks/attention.py)
# Below this many tokens dense SDPA with the exact mask beat the blocked paths on CPU: MiniLM's attention shape
# (12 heads, d=32), batch 8, 512 tokens, local window 32 (density 0.12): banded 2-4x, gathered 2-3x the masked
# SDPA's time; at ~150 tokens, batch 32: banded 27x, gathered 6x. From 1024 tokens the blocked paths win
# (benchmarks/attention.py, benchmarks/encoding.py).
MIN_BLOCKED_LEN = 1024


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
    """The cheapest correct path: blocked unless it would compute as many scores as dense attention, or
    the sequence is too short for blocking to pay (``MIN_BLOCKED_LEN``)."""
    if seq_len < MIN_BLOCKED_LEN:
        return "dense_cover"
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
    """Bool [n_blocks, qb, g + span]: slot s of block i is visible to query t of the block.

    Slots: the ``g`` global keys, then the band (key token i*qb - window + s). Band slots outside the
    sequence or on a global token (already among the global slots) are masked."""
    n = -(-seq_len // qb)
    span = qb + 2 * window
    t = torch.arange(qb)[:, None]
    s = torch.arange(span)[None, :]
    pos = torch.arange(n)[:, None, None] * qb - window + s[None]
    band = (s >= t) & (s <= t + 2 * window)
    mask = band[None] & (pos >= num_global) & (pos < seq_len)
    if num_global:
        mask = torch.cat([torch.ones(n, qb, num_global, dtype=torch.bool), mask], dim=2)
    return mask.to(device)


@lru_cache(maxsize=64)
def _additive(mask_key: tuple, lo: int, hi: int, dtype: torch.dtype) -> torch.Tensor:
    """Float version (0 / -inf) of band-mask blocks [lo, hi): SDPA would otherwise convert a bool mask per call."""
    mask = _band_mask(*mask_key)[lo:hi]
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def _interior_range(L: int, qb: int, window: int, num_global: int) -> tuple[int, int]:
    """Blocks [lo, hi) whose whole band lies inside the sequence and past the global tokens."""
    n = -(-L // qb)
    lo = min(n, -(-(window + num_global) // qb))
    hi = min(n, max(lo, (L - qb - window) // qb + 1))
    return lo, hi


def _banded(q, k, v, window, num_global, kpm, scale, dropout_p):
    """Per batch element: heads as SDPA's batch, query blocks as SDPA's heads, keys as strided band views."""
    B, H, L, D = q.shape
    outs = [
        _banded_one(q[b], k[b], v[b], window, num_global, None if kpm is None or bool(kpm[b].all()) else kpm[b],
                    scale, dropout_p)
        for b in range(B)
    ]
    out = outs[0][None] if B == 1 else torch.stack(outs)
    g = num_global
    if g:
        # Global query rows attend to every (real) key.
        mask = None if kpm is None else kpm[:, None, None, :]
        out_g = F.scaled_dot_product_attention(q[:, :, :g], k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
        out = torch.cat([out_g, out[:, :, g:]], dim=2)
    return out


def _band_keys(x: torch.Tensor, first: int, last: int, qb: int, window: int, L: int) -> torch.Tensor:
    """[H, last - first, span, D] band key windows of blocks [first, last): a view when they lie inside x."""
    span = qb + 2 * window
    start, stop = first * qb - window, (last - 1) * qb - window + span
    if start >= 0 and stop <= L:
        return x[:, start:stop].unfold(1, span, qb).transpose(-1, -2)
    padded = F.pad(x[:, max(start, 0):min(stop, L)], (0, 0, max(-start, 0), max(stop - L, 0)))
    return padded.unfold(1, span, qb).transpose(-1, -2)


def _banded_one(q, k, v, window, g, kpm, scale, dropout_p):
    """One sequence: q, k, v [H, L, D]; kpm bool [L] or None. Returns [H, L, D]."""
    H, L, D = q.shape
    qb = BAND_QUERY_BLOCK
    n = -(-L // qb)
    Lp = n * qb
    qp = (q if Lp == L else F.pad(q, (0, 0, 0, Lp - L))).unflatten(1, (n, qb))  # [H, n, qb, D]
    mask_key = (L, qb, window, g, q.device)
    if kpm is None:
        lo, hi = _interior_range(L, qb, window, g)
        ranges = [(0, lo, _additive(mask_key, 0, lo, q.dtype)),
                  (lo, hi, _additive(mask_key, lo, lo + 1, q.dtype)),  # interior blocks share one mask
                  (hi, n, _additive(mask_key, hi, n, q.dtype))]
    else:
        keys = F.pad(kpm, (window, Lp - L + window)).unfold(0, qb + 2 * window, qb)  # [n, span]
        if g:
            keys = torch.cat([kpm[None, :g].expand(n, g), keys], dim=1)
        full = _band_mask(*mask_key) & keys[:, None, :]
        # A padding query whose band holds only padding sees its own slot (finite output, ignored anyway).
        diag = torch.zeros(qb, full.shape[-1], dtype=torch.bool, device=q.device)
        diag[torch.arange(qb), g + window + torch.arange(qb)] = True
        full = full | (diag & ~full.any(-1, keepdim=True))
        ranges = [(0, n, full)]
    parts = []
    for first, last, mask in ranges:
        if last <= first:
            continue
        kw = _band_keys(k, first, last, qb, window, L)
        vw = _band_keys(v, first, last, qb, window, L)
        if g:
            kw = torch.cat([k[:, None, :g].expand(H, last - first, g, D), kw], dim=2)
            vw = torch.cat([v[:, None, :g].expand(H, last - first, g, D), vw], dim=2)
        parts.append(F.scaled_dot_product_attention(qp[:, first:last], kw, vw, attn_mask=mask[None],
                                                    dropout_p=dropout_p, scale=scale))
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return out.flatten(1, 2)[:, :L]


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


@lru_cache(maxsize=32)
def _cover_mask(layout: BlockLayout, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor | None:
    """The layout's token mask [1, Hl, L, L] (bool, or additive 0 / -inf in ``dtype``), cached per layout;
    None when the pattern allows every pair at this length."""
    pattern = layout.token_mask().to(device)[None]
    if bool(pattern.all()):
        return None
    if dtype is None:
        return pattern
    return torch.zeros(pattern.shape, dtype=dtype, device=device).masked_fill_(~pattern, float("-inf"))


@lru_cache(maxsize=256)
def _log_dispatch(layout: BlockLayout, full: bool) -> None:
    log.debug("sparse attention at %d tokens (block %d, density %.3f): %s", layout.seq_len, layout.block,
              layout.density, "the pattern allows every pair here: dense SDPA with the padding mask only" if full
              else "dense SDPA with the pattern's exact token mask (same result as the blocked paths, faster here)")


def _dense_cover(q, k, v, layout: BlockLayout, kpm, scale, dropout_p):
    pattern = _cover_mask(layout, q.device, q.dtype)
    if log.isEnabledFor(logging.DEBUG):
        _log_dispatch(layout, pattern is None)
    if kpm is None:
        mask = pattern
    elif pattern is None:
        mask = kpm[:, None, None, :]
    else:
        # Padding keys get a large finite penalty, not -inf: a padding query whose allowed keys are all padding
        # then attends to them (finite, ignored) instead of producing NaN; real rows are exact (exp underflows to 0).
        padding = torch.zeros(kpm.shape, dtype=q.dtype, device=q.device).masked_fill_(~kpm, torch.finfo(q.dtype).min / 2)
        mask = pattern + padding[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
