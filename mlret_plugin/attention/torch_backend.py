"""Block-sparse attention in plain PyTorch: any device, autograd backward, fast on CPU.

Only the listed blocks are computed, and always through PyTorch's fused attention kernel (on CPU its flash
kernel) on 4-D tensors, because that is where PyTorch is fast.

On CPU without dropout (the *fused* paths), the pattern is split into parts that the flash kernel runs
without copying keys, each returning its log-sum-exp; the parts' partial softmaxes are merged exactly
(``out = sum_i exp(lse_i - LSE) * out_i``, ``LSE = logaddexp_i lse_i``) by one autograd Function whose
backward runs the kernel's backward per part with the merged output and LSE (exact: ``P = exp(S - LSE)``
and ``rowsum(dO * O)`` are those of the whole row). The backward tiles on its own (``BAND_BACKWARD_BLOCK``)
and runs tiled parts in chunks (``BACKWARD_CHUNK_BYTES``), so the per-tile key-window gradients the kernel
materialises stay in cache; overlapping windows are summed one tile at a time:

- ``banded`` (layouts with a token window, i.e. the local pattern): heads (and batch) go along the kernel's
  batch dimension and query tiles along its head dimension (``[B*H, n_tiles, tile, D]``, a free view); each
  tile's keys are a strided ``unfold`` view into the key tensor (no copy). Interior tiles share one
  cached additive band mask ``[tile, span]`` that stays in cache; only the few edge tiles, whose band
  leaves the sequence (or reaches padding), get padded keys and their own mask. Global tokens are a part
  of their own (every query against the ``g`` global keys, which the band masks out), and their query rows
  run densely and replace the band's result.
- ``gathered`` (block layouts, e.g. BigBird): rows listing more than half of all blocks (global rows) run
  densely; the other rows are split into the *band* of blocks around the diagonal (a strided view, like
  ``banded``), the *shared* key blocks every row lists (global / strided columns: one call, all rows as one
  sequence, no copy when they are contiguous), and the *rest* (random blocks: gathered with
  ``index_select``, -1 padding masked).
- ``dense_cover``: when the blocked formulation would compute at least as many scores as plain attention
  (the band covers everything), or the sequence is shorter than ``MIN_BLOCKED_LEN`` (on CPU the blocked
  paths' extra launches and copies cost more than they save there), plain SDPA with the exact token mask
  (an additive float mask, which costs SDPA no more than a padding mask) is the fastest correct choice.
  This is a dispatch, not a fallback: the result is the pattern's. Where the pattern allows every pair
  at this length, SDPA runs with the padding mask only, exactly as the dense model.

Elsewhere (CUDA, or attention dropout, which the CPU flash kernel does not do) ``banded`` and ``gathered``
run as single ``scaled_dot_product_attention`` calls over copied key windows / gathered blocks.

Dtypes: float32, bfloat16, float16 and float64 run natively (q, k, v, the output and the gradients in that
dtype; the kernel accumulates in float32, the merge of parts and the gradient sums too); the fused backward
of bfloat16 / float16 computes in float32, chunk by chunk (``BACKWARD_IN_FLOAT32``: faster than the CPU
kernel's bf16 backward on these tiles, and more exact). Any other dtype is an error, never a silent cast.
Under ``torch.autocast`` float32 inputs are cast to the autocast dtype, as ``scaled_dot_product_attention``
is. Query rows whose keys are all masked (padding) get finite, meaningless outputs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
import torch
import torch.nn.functional as F

from mlret_plugin.attention.layout import BlockLayout

log = logging.getLogger(__name__)

PATHS = ("auto", "banded", "gathered", "dense_cover")
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
BAND_QUERY_BLOCK = 32  # query tile of the banded path; 32 and 64 measured best on CPU (benchmarks/attention.py)
BAND_QUERY_BLOCKS: dict[torch.dtype, int] = {}  # per-dtype query tiles where they differ from BAND_QUERY_BLOCK
# The fused backward may tile differently (it works from the merged output and log-sum-exp, in token order).
BAND_BACKWARD_BLOCK = 64
BAND_BACKWARD_BLOCKS: dict[torch.dtype, int] = {}
# Below this many tokens dense SDPA with the exact mask beat the blocked paths on CPU: MiniLM's attention shape
# (12 heads, d=32), batch 8, 512 tokens, local window 32 (density 0.12): banded 2-4x, gathered 2-3x the masked
# SDPA's time; at ~150 tokens, batch 32: banded 27x, gathered 6x. From 1024 tokens the blocked paths win
# (benchmarks/attention.py, benchmarks/encoding.py).
MIN_BLOCKED_LEN = 1024
FUSED = True  # the CPU parts-and-merge paths; False runs the single-call paths everywhere (tests compare both)
# "Masked" in the fused paths' float32 masks: finite, so a part with no allowed key in a row yields a
# log-sum-exp near -1e30 (weight 0 in the merge); with -inf the CPU kernel returns lse 0 for such rows.
_NEG = -1e30


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
    q, k, v = _autocast(q, k, v)
    if q.dtype not in DTYPES:
        raise TypeError(f"the torch sparse-attention backend runs {', '.join(str(d) for d in DTYPES)}; got "
                        f"{q.dtype} (cast q, k, v explicitly)")
    L = q.shape[2]
    if key_padding_mask is not None and bool(key_padding_mask.all()):
        key_padding_mask = None  # nothing to mask: keeps the batched fast path
    if path == "auto":
        path = choose_path(layout, L)
    elif path == "gathered":
        path = "gathered_all"
    fused = FUSED and q.device.type == "cpu" and not dropout_p
    if path == "banded":
        if layout.window is None:
            raise ValueError("the banded path needs a layout with a token window (the local pattern)")
        if fused:
            return _banded_fused(q, k, v, layout.window, layout.num_global, key_padding_mask, scale)
        return _banded(q, k, v, layout.window, layout.num_global, key_padding_mask, scale, dropout_p)
    if path in ("gathered", "gathered_all"):
        # Forced 'gathered' gathers every row; 'auto' runs global (heavy) rows densely.
        split = path == "gathered"
        if fused:
            out = _gathered_fused(q, k, v, layout, key_padding_mask, scale, split_heavy=split)
            if out is not None:
                return out
        return _gathered(q, k, v, layout, key_padding_mask, scale, dropout_p, split_heavy=split)
    return _dense_cover(q, k, v, layout, key_padding_mask, scale, dropout_p)


def _autocast(q, k, v):
    """As scaled_dot_product_attention under autocast: float32 inputs run in the autocast dtype."""
    device = q.device.type
    if q.dtype == torch.float32 and torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        return q.to(dtype), k.to(dtype), v.to(dtype)
    return q, k, v


def band_tile(dtype: torch.dtype, backward: bool = False) -> int:
    """The banded path's query tile for ``dtype`` (forward, or the fused backward's)."""
    tiles = BAND_BACKWARD_BLOCKS if backward else BAND_QUERY_BLOCKS
    return tiles.get(dtype, BAND_BACKWARD_BLOCK if backward else BAND_QUERY_BLOCK)


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


# ------------------------------------------------------------------------------- fused parts (CPU)

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
# The backward runs tiled parts in chunks whose key-window gradients (which the kernel materialises, one
# window per tile) stay about this size: in cache, and reused memory instead of fresh pages.
BACKWARD_CHUNK_BYTES = 2 << 20
# The fused backward of these dtypes computes in float32 (inputs upcast, gradients returned in the input dtype):
# PyTorch's CPU flash backward in bf16 measured 1.3x (local) to 1.25x (BigBird) slower than in float32 on the
# fused paths' tiles (benchmarks/attention.py, 4,096 tokens), and float32 is the more exact. Forward stays native.
BACKWARD_IN_FLOAT32 = {torch.bfloat16, torch.float16}


class _Slice:
    """Keys ``[start, stop)`` of the padded k, v: [nb, H, stop - start, D] views."""

    def __init__(self, batch: slice, start: int, stop: int):
        self.batch, self.start, self.stop = batch, start, stop

    def __call__(self, kp, vp, dtype=None):
        return (kp[self.batch, :, self.start:self.stop].to(dtype or kp.dtype),
                vp[self.batch, :, self.start:self.stop].to(dtype or vp.dtype))

    def add_grad(self, dk_part, dv_part, dk, dv):
        dk[self.batch, :, self.start:self.stop].add_(dk_part)
        dv[self.batch, :, self.start:self.stop].add_(dv_part)


class _Window:
    """Keys of tiles [first, last): tile i sees tokens [i*step - before, i*step - before + span) of the padded
    keys, as [nb*H, last - first, span, D]: a strided view where that range lies inside the sequence, else a
    zero-padded copy of just the range."""

    def __init__(self, batch: slice, first: int, last: int, step: int, before: int, span: int):
        self.batch, self.first, self.last, self.step, self.before, self.span = batch, first, last, step, before, span
        self.start = first * step - before
        self.stop = (last - 1) * step - before + span

    def sub(self, t0: int, t1: int) -> "_Window":
        return _Window(self.batch, self.first + t0, self.first + t1, self.step, self.before, self.span)

    def window(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        x = x[self.batch]
        nb, H, Lp, D = x.shape
        x = x[:, :, max(self.start, 0):min(self.stop, Lp)].to(dtype or x.dtype)  # converts just the range
        if self.start < 0 or self.stop > Lp:
            x = F.pad(x, (0, 0, max(-self.start, 0), max(self.stop - Lp, 0)))
        w = x.unfold(2, self.span, self.step).transpose(-1, -2)  # [nb, H, tiles, span, D]
        return w.reshape(nb * H, self.last - self.first, self.span, D)

    def __call__(self, kp, vp, dtype=None):
        return self.window(kp, dtype), self.window(vp, dtype)

    def fold(self, grad: torch.Tensor, out: torch.Tensor) -> None:
        """Add the window gradients [nb*H, tiles, span, D] into out [B, H, Lp, D] (overlaps summed): one add per
        tile (unfold_backward on the kernel's gradient layout measured ~100x slower)."""
        out = out[self.batch]
        nb, H, Lp, D = out.shape
        grad = grad.view(nb, H, self.last - self.first, self.span, D)
        for i in range(self.last - self.first):
            start = self.start + i * self.step
            lo, hi = max(start, 0), min(start + self.span, Lp)
            if hi > lo:
                out[:, :, lo:hi].add_(grad[:, :, i, lo - start:hi - start])

    def add_grad(self, dk_part, dv_part, dk, dv):
        self.fold(dk_part, dk)
        self.fold(dv_part, dv)


class _Gather:
    """Keys of light rows: the listed blocks ``index`` [Hl, R, m] of each row, as [nb*H, R, m*b, D]; or,
    with ``flat``, one key sequence [nb, H, R*m*b, D] (shared blocks: Hl = R = 1)."""

    def __init__(self, batch: slice, index: torch.Tensor, block: int, flat: bool = False):
        self.batch, self.index, self.block, self.flat = batch, index, block, flat

    def _flat_index(self, nb: int, H: int, n: int) -> torch.Tensor:
        """Row ids into x[batch] viewed as [nb*H*n, b*D]."""
        Hl = self.index.shape[0]
        heads = torch.arange(nb * H, device=self.index.device).view(nb, H, 1, 1) * n
        index = self.index[None] if Hl == H else self.index[None].expand(nb, H, *self.index.shape[1:])
        return (heads + index).flatten()

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        x = x[self.batch]
        nb, H, Lp, D = x.shape
        b = self.block
        Hl, R, m = self.index.shape
        n = Lp // b
        if x.is_contiguous():  # one row-wise index_select (memcpy per block)
            out = x.view(nb * H * n, b * D).index_select(0, self._flat_index(nb, H, n))
        else:
            blocks = x.unflatten(2, (n, b))  # [nb, H, n, b, D]
            if Hl == 1:
                out = blocks.index_select(2, self.index.flatten())
            else:
                out = torch.stack([blocks[:, h].index_select(1, self.index[h].flatten()) for h in range(H)], 1)
        if self.flat:
            return out.view(nb, H, R * m * b, D)
        return out.view(nb * H, R, m * b, D)

    def __call__(self, kp, vp, dtype=None):
        return self.gather(kp).to(dtype or kp.dtype), self.gather(vp).to(dtype or vp.dtype)

    def add_grad(self, dk_part, dv_part, dk, dv):
        b = self.block
        Hl, R, m = self.index.shape
        for grad, out in ((dk_part, dk), (dv_part, dv)):
            out = out[self.batch]
            nb, H, Lp, D = out.shape
            # Slot e of every row at once, in the kernel's gradient layout (no copy): index_add_ along the blocks.
            grad = grad.reshape(nb, H, R, m, b, D) if self.flat else grad.view(nb, H, R, m, b, D)
            blocks = out.unflatten(2, (Lp // b, b))  # [nb, H, n, b, D]
            for e in range(m):
                if Hl == 1:
                    blocks.index_add_(2, self.index[0, :, e], grad[:, :, :, e].to(out.dtype))
                else:
                    for h in range(H):
                        blocks[:, h].index_add_(1, self.index[h, :, e], grad[:, h, :, e].to(out.dtype))


@dataclass(frozen=True, eq=False)
class _Part:
    """One flash-kernel call: queries ``qp[batch, :, start:stop]`` viewed as ``shape`` ([X, Y, Lq, D]),
    keys / values from ``keys`` (views or copies of the padded k, v), an additive float32 ``mask``
    broadcastable to [X, Y, Lq, Lk] (or None). An ``exclusive`` part's rows take its result alone."""

    batch: slice
    start: int
    stop: int
    shape: tuple
    keys: object
    mask: torch.Tensor | None = None
    exclusive: bool = False

    def region(self, t: torch.Tensor) -> torch.Tensor:
        """This part's rows of a [B, H, Lp(, D)] tensor, viewed in the part's layout."""
        shape = self.shape if t.dim() == 4 else self.shape[:-1]
        return t[self.batch, :, self.start:self.stop].view(shape)

    def queries(self, qp: torch.Tensor) -> torch.Tensor:
        return qp[self.batch, :, self.start:self.stop].reshape(self.shape)

    def contains(self, other: "_Part") -> bool:
        return (self.start <= other.start and other.stop <= self.stop and self.batch.start <= other.batch.start
                and other.batch.stop <= self.batch.stop)

    def overlaps(self, other: "_Part") -> bool:
        rows = self.start < other.stop and other.start < self.stop
        batch = self.batch.start < other.batch.stop and other.batch.start < self.batch.stop
        return rows and batch

    def chunks(self, element_size: int) -> list["_Part"]:
        """Tiled parts split along their tiles so that one chunk's key windows stay near BACKWARD_CHUNK_BYTES."""
        if not isinstance(self.keys, _Window):
            return [self]
        X, tiles, rows, D = self.shape
        per_tile = X * self.keys.span * D * max(element_size, 4)
        step = max(1, BACKWARD_CHUNK_BYTES // per_tile)
        if step >= tiles:
            return [self]
        out = []
        for t0 in range(0, tiles, step):
            t1 = min(tiles, t0 + step)
            mask = self.mask if self.mask is None or self.mask.shape[1] == 1 else self.mask[:, t0:t1]
            out.append(_Part(self.batch, self.start + t0 * rows, self.start + t1 * rows, (X, t1 - t0, rows, D),
                             self.keys.sub(t0, t1), mask, self.exclusive))
        return out


class _PartsAttention(torch.autograd.Function):
    """Attention as the exact merge of flash-kernel parts. Inputs are padded to whole tiles: [B, H, Lp, D]."""

    @staticmethod
    def forward(ctx, qp, kp, vp, parts, backward_parts, scale):
        B, H, Lp, D = qp.shape
        shared = [p for p in parts if not p.exclusive]
        single = [not any(p.overlaps(o) for o in shared if o is not p) for p in shared]
        merging = [p for p, alone in zip(shared, single) if not alone]
        # A merged part whose rows hold every other merged part's rows starts the sum (no zero fill).
        first = next((p for p in merging if all(p.contains(o) for o in merging)), None)
        acc_dtype = torch.float32 if merging else qp.dtype
        out = (torch.zeros if merging and first is None else torch.empty)(B, H, Lp, D, dtype=acc_dtype,
                                                                          device=qp.device)
        lse = torch.full((B, H, Lp), float("-inf"), dtype=torch.float32, device=qp.device)
        pending = []
        for part, alone in zip(shared, single):
            o, l = _flash(part.queries(qp), *part.keys(kp, vp), 0.0, False, attn_mask=part.mask, scale=scale)
            if alone:
                part.region(out).copy_(o)
                part.region(lse).copy_(l)
            else:
                lse_part = part.region(lse)
                torch.logaddexp(lse_part, l, out=lse_part)
                pending.append((part, o, l))
        pending.sort(key=lambda item: item[0] is not first)
        for part, o, l in pending:
            weight = torch.exp(l - part.region(lse)).unsqueeze(-1)
            if part is first:
                torch.mul(o, weight, out=part.region(out))
            else:
                part.region(out).addcmul_(o, weight)
        for part in parts:
            if part.exclusive:
                o, l = _flash(part.queries(qp), *part.keys(kp, vp), 0.0, False, attn_mask=part.mask, scale=scale)
                part.region(out).copy_(o)
                part.region(lse).copy_(l)
        out = out.to(qp.dtype)
        ctx.save_for_backward(qp, kp, vp, out, lse)
        ctx.parts, ctx.scale = backward_parts or parts, scale
        return out

    @staticmethod
    def backward(ctx, grad):
        qp, kp, vp, out, lse = ctx.saved_tensors
        parts = ctx.parts
        dtype = qp.dtype
        # Each chunk's inputs are converted on the fly (small, in cache), never whole tensors.
        work = torch.float32 if dtype in BACKWARD_IN_FLOAT32 else dtype
        grad = grad.contiguous()
        grad_shared = grad
        if any(p.exclusive for p in parts):
            # Rows an exclusive part replaced get no gradient through the other parts.
            grad_shared = grad.clone()
            for part in parts:
                if part.exclusive:
                    part.region(grad_shared).zero_()
        # Gradients from several parts (and overlapping key windows) accumulate in float32.
        acc = torch.promote_types(dtype, torch.float32)
        dq, dk, dv = (torch.zeros(t.shape, dtype=acc, device=t.device) for t in (qp, kp, vp))
        for whole in parts:
            for part in whole.chunks(torch.finfo(work).bits // 8):
                k_part, v_part = part.keys(kp, vp, work)
                dq_part, dk_part, dv_part = _flash_backward(
                    part.region(grad if part.exclusive else grad_shared).to(work), part.queries(qp).to(work),
                    k_part, v_part, part.region(out).to(work), part.region(lse), 0.0, False, attn_mask=part.mask,
                    scale=ctx.scale)
                part.region(dq).add_(dq_part)
                part.keys.add_grad(dk_part, dv_part, dk, dv)
        return dq.to(dtype), dk.to(dtype), dv.to(dtype), None, None, None


def _fused_inputs(q, k, v, Lp):
    """q, k, v padded to Lp tokens, with batch and heads mergeable into one dimension (views stay views)."""
    L = q.shape[2]
    tensors = [t if Lp == L else F.pad(t, (0, 0, 0, Lp - L)) for t in (q, k, v)]
    return [t if t.shape[0] == 1 or t.stride(0) == t.shape[1] * t.stride(1) else t.contiguous() for t in tensors]


def _groups(B: int, kpm: torch.Tensor | None) -> list[tuple[slice, torch.Tensor | None]]:
    """Batch slices sharing masks: runs of unpadded sequences together, each padded sequence alone."""
    if kpm is None:
        return [(slice(0, B), None)]
    full = kpm.all(1).tolist()
    groups, b = [], 0
    while b < B:
        if full[b]:
            e = b
            while e < B and full[e]:
                e += 1
            groups.append((slice(b, e), None))
            b = e
        else:
            groups.append((slice(b, b + 1), kpm[b]))
            b += 1
    return groups


def _bias(allowed: torch.Tensor) -> torch.Tensor:
    """Additive float32 mask: 0 where allowed, _NEG elsewhere."""
    return torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device).masked_fill_(~allowed, _NEG)


# ------------------------------------------------------------------------------------------ banded, fused


@lru_cache(maxsize=64)
def _interior_band_bias(qb: int, window: int, device: torch.device) -> torch.Tensor:
    """[1, 1, qb, span] additive mask of a tile whose band lies inside the sequence: |t - s'| <= window."""
    span = qb + 2 * window
    t = torch.arange(qb, device=device)[:, None]
    s = torch.arange(span, device=device)[None, :]
    return _bias((s >= t) & (s <= t + 2 * window))[None, None]


def _band_allowed(first: int, last: int, qb: int, window: int, g: int, keys_ok: torch.Tensor) -> torch.Tensor:
    """Bool [last - first, qb, span]: slot s of tile i is key token i*qb - window + s; allowed inside the band,
    on a real key (keys_ok [Lp]) and past the global tokens (their own part covers those)."""
    span = qb + 2 * window
    device = keys_ok.device
    t = torch.arange(qb, device=device)[:, None]
    s = torch.arange(span, device=device)[None, :]
    pos = torch.arange(first, last, device=device)[:, None] * qb - window + torch.arange(span, device=device)[None]
    inside = (pos >= g) & (pos < keys_ok.numel())
    ok = inside & keys_ok[pos.clamp(0, keys_ok.numel() - 1)]
    return ((s >= t) & (s <= t + 2 * window))[None] & ok[:, None, :]


@lru_cache(maxsize=64)
def _edge_band_bias(L: int, first: int, last: int, qb: int, window: int, g: int, device: torch.device):
    """[1, tiles, qb, span] additive mask of edge tiles [first, last) without key padding (cached)."""
    keys_ok = torch.arange(-(-L // qb) * qb, device=device) < L
    return _bias(_band_allowed(first, last, qb, window, g, keys_ok))[None]


def _banded_fused(q, k, v, window, g, kpm, scale):
    B, H, L, D = q.shape
    qb, qb_back = band_tile(q.dtype), band_tile(q.dtype, backward=True)
    Lp = -(-L // max(qb, qb_back)) * max(qb, qb_back)  # whole tiles of both (powers of two)
    qp, kp, vp = _fused_inputs(q, k, v, Lp)
    parts = _band_parts(B, H, L, Lp, D, window, g, kpm, qb, q.device)
    back = parts if qb_back == qb else _band_parts(B, H, L, Lp, D, window, g, kpm, qb_back, q.device)
    out = _PartsAttention.apply(qp, kp, vp, parts, back, scale)
    return out if Lp == L else out[:, :, :L]


def _band_parts(B, H, L, Lp, D, window, g, kpm, qb, device) -> tuple:
    """The local pattern as parts with query tiles of qb tokens (inputs padded to Lp, a multiple of qb)."""
    n = Lp // qb
    span = qb + 2 * window
    real = torch.arange(Lp, device=device) < L
    parts = []
    for batch, kpm_b in _groups(B, kpm):
        nb = batch.stop - batch.start
        length = L
        if kpm_b is not None:
            length = int(kpm_b.sum())
            if not bool(kpm_b[:length].all()):  # not right-padded: every tile gets its own mask
                length = -1
        if length < 0:
            ranges = [(0, n, False)]
        else:
            lo, hi = _interior_range(length, qb, window, g)
            ranges = [(0, lo, False), (lo, hi, True), (hi, n, False)]
        for first, last, interior in ranges:
            if last <= first:
                continue
            if interior:
                mask = _interior_band_bias(qb, window, device)
            elif kpm_b is None:
                mask = _edge_band_bias(L, first, last, qb, window, g, device)
            else:
                keys_ok = real & F.pad(kpm_b, (0, Lp - L))
                mask = _bias(_band_allowed(first, last, qb, window, g, keys_ok))[None]
            parts.append(_Part(batch, first * qb, last * qb, (nb * H, last - first, qb, D),
                               _Window(batch, first, last, qb, window, span), mask))
    if g:
        # Every query against the global keys (the band masks them out) ...
        mask = None if kpm is None else _bias(kpm[:, :g])[:, None, None, :]
        parts.append(_Part(slice(0, B), 0, Lp, (B, H, Lp, D), _Slice(slice(0, B), 0, g), mask))
        # ... and the global queries against every key, replacing the band's result in their rows.
        keys_ok = real[None] if kpm is None else real[None] & F.pad(kpm, (0, Lp - L))
        mask = None if bool(keys_ok.all()) else _bias(keys_ok)[:, None, None, :]
        parts.append(_Part(slice(0, B), 0, g, (B, H, g, D), _Slice(slice(0, B), 0, Lp), mask, exclusive=True))
    return tuple(parts)


# ---------------------------------------------------------------------------------------- gathered, fused


@dataclass(frozen=True, eq=False)
class _BlockPlan:
    """A block layout split for the fused path (static per layout)."""

    heavy: int  # rows [0, heavy) run densely
    heavy_allowed: torch.Tensor | None  # bool [Hl, heavy*b, Lp] listed key tokens of the dense rows; None: all
    band: int  # blocks either side of the diagonal that every light row lists; -1: no band part
    band_allowed: torch.Tensor | None  # bool [R, 2*band+1] band slots not out of range and not shared
    shared: tuple  # key blocks every light row lists
    rest: torch.Tensor | None  # long [Hl, R, m]: each light row's other listed blocks (padded with 0)
    rest_valid: torch.Tensor | None  # bool [Hl, R, m]


@lru_cache(maxsize=64)
def _block_plan(layout: BlockLayout, split_heavy: bool) -> _BlockPlan | None:
    """The split of ``layout`` for the fused path; None when its dense rows are not the first rows or a light
    row lists no block."""
    listed = layout.block_mask()  # [Hl, n, n]
    Hl, n, _ = listed.shape
    b = layout.block
    heavy_rows = (layout.nnz * 2 > n).any(0) if split_heavy else torch.zeros(n, dtype=torch.bool)
    r0 = int(heavy_rows.sum())
    if not bool(heavy_rows[:r0].all()) or not bool(listed[:, r0:].any(-1).all()):
        return None
    light = listed[:, r0:]  # [Hl, R, n]
    R = n - r0
    heavy_allowed = None
    if r0 and not bool(listed[:, :r0].all()):
        heavy_allowed = listed[:, :r0].repeat_interleave(b, 1).repeat_interleave(b, 2)
    if R == 0:
        return _BlockPlan(r0, heavy_allowed, -1, None, (), None, None)
    shared = light.all(1).all(0)  # [n]
    rows = torch.arange(r0, n)
    band = -1
    for d in range((n - 1) // 2 + 1):
        ok = True
        for j in (rows - d, rows + d):
            inside = (j >= 0) & (j < n)
            ok &= bool(light[:, inside.nonzero().flatten(), j[inside]].all())
        if not ok:
            break
        band = d
    band_allowed = None
    in_band = torch.zeros(R, n, dtype=torch.bool)
    if band >= 0:
        j = rows[:, None] - band + torch.arange(2 * band + 1)[None]  # [R, 2*band+1]
        inside = (j >= 0) & (j < n)
        band_allowed = inside & ~shared[j.clamp(0, n - 1)]
        if band_allowed.any():
            in_band = (rows[:, None] - torch.arange(n)[None]).abs() <= band
        else:
            band, band_allowed = -1, None
    other = light & ~shared[None, None] & ~in_band[None]  # [Hl, R, n]
    m = int(other.sum(-1).max())
    rest = rest_valid = None
    if m:
        cols = torch.arange(n).expand(Hl, R, n)
        order = torch.where(other, cols, cols + n).argsort(-1)[..., :m]  # listed blocks first, ascending
        rest_valid = torch.arange(m) < other.sum(-1, keepdim=True)
        rest = torch.where(rest_valid, order, torch.zeros_like(order))
    return _BlockPlan(r0, heavy_allowed, band, band_allowed, tuple(shared.nonzero().flatten().tolist()), rest,
                      rest_valid)


@lru_cache(maxsize=64)
def _block_masks(layout: BlockLayout, split_heavy: bool, device: torch.device):
    """The masks of the no-padding case, cached per layout."""
    return _block_part_masks(_block_plan(layout, split_heavy), layout, None, device)


def _block_part_masks(plan: _BlockPlan, layout: BlockLayout, kpm_b: torch.Tensor | None, device: torch.device):
    """(heavy, band [R, span] slots, shared, rest [Hl, R, 1, m*b]) additive masks (None: nothing masked)."""
    b, n, L = layout.block, layout.n_blocks, layout.seq_len
    Lp = n * b
    r0 = plan.heavy
    keys_ok = torch.arange(Lp, device=device) < L
    if kpm_b is not None:
        keys_ok &= F.pad(kpm_b, (0, Lp - L))
    all_ok = bool(keys_ok.all())
    heavy = band = shared = rest = None
    if r0 and not (plan.heavy_allowed is None and all_ok):
        allowed = keys_ok[None, None, :]
        if plan.heavy_allowed is not None:
            allowed = plan.heavy_allowed.to(device) & allowed
        heavy = _bias(allowed)[None]
    if plan.band >= 0:
        span = (2 * plan.band + 1) * b
        slots = plan.band_allowed.to(device).repeat_interleave(b, 1)  # [R, span]
        pos = torch.arange(r0, n, device=device)[:, None] * b - plan.band * b + torch.arange(span, device=device)
        band = _bias(slots & keys_ok[pos.clamp(0, Lp - 1)])
    if plan.shared:
        cols = torch.tensor(plan.shared, device=device)
        ok = keys_ok[(cols[:, None] * b + torch.arange(b, device=device)).flatten()]
        shared = None if bool(ok.all()) else _bias(ok)[None, None, None, :]
    if plan.rest is not None:
        index = plan.rest.to(device)
        Hl, R, m = index.shape
        tokens = index[..., None] * b + torch.arange(b, device=device)  # [Hl, R, m, b]
        rest = _bias((plan.rest_valid.to(device)[..., None] & keys_ok[tokens]).reshape(Hl, R, 1, m * b))
    return heavy, band, shared, rest


def _gathered_fused(q, k, v, layout: BlockLayout, kpm, scale, split_heavy=True):
    B, H, L, D = q.shape
    b, n = layout.block, layout.n_blocks
    Lp = n * b
    Hl = layout.heads
    if Hl not in (1, H):
        raise ValueError(f"layout has {Hl} heads; expected 1 (shared) or {H}")
    plan = None if layout.window is not None else _block_plan(layout, split_heavy)
    if plan is None:  # token windows inside blocks (the banded path's job), or an irregular layout
        return None
    device = q.device
    qp, kp, vp = _fused_inputs(q, k, v, Lp)
    r0 = plan.heavy
    R = n - r0
    parts = []
    for batch, kpm_b in _groups(B, kpm):
        nb = batch.stop - batch.start
        masks = _block_masks(layout, split_heavy, device) if kpm_b is None else \
            _block_part_masks(plan, layout, kpm_b, device)
        heavy, band, shared, rest = masks
        if r0:
            parts.append(_Part(batch, 0, r0 * b, (nb, H, r0 * b, D), _Slice(batch, 0, Lp), heavy))
        if not R:
            continue
        if plan.band >= 0:
            span = (2 * plan.band + 1) * b
            lo = max(r0, plan.band)
            hi = max(lo, n - plan.band)
            for first, last in ((r0, lo), (lo, hi), (hi, n)):
                if last > first:
                    parts.append(_Part(batch, first * b, last * b, (nb * H, last - first, b, D),
                                       _Window(batch, first, last, b, plan.band * b, span),
                                       band[first - r0:last - r0][None, :, None, :]))
        if plan.shared:
            c0, c1 = plan.shared[0], plan.shared[-1] + 1
            if c1 - c0 == len(plan.shared):
                keys = _Slice(batch, c0 * b, c1 * b)
            else:
                keys = _Gather(batch, torch.tensor(plan.shared, device=device).view(1, 1, -1), b, flat=True)
            parts.append(_Part(batch, r0 * b, Lp, (nb, H, R * b, D), keys, shared))
        if plan.rest is not None:
            mask = rest
            if mask.shape[0] > 1 and nb > 1:
                mask = mask[None].expand(nb, *mask.shape).reshape(nb * mask.shape[0], *mask.shape[1:])
            parts.append(_Part(batch, r0 * b, Lp, (nb * H, R, b, D), _Gather(batch, plan.rest.to(device), b), mask))
    out = _PartsAttention.apply(qp, kp, vp, tuple(parts), None, scale)
    return out if Lp == L else out[:, :, :L]


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
        # index_select copies whole blocks (advanced indexing measured ~1.5-2x slower on CPU)
        kg, vg = (x.index_select(2, idx[0].flatten()) for x in (kb, vb))  # [B, H, R*m, b, D]
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
