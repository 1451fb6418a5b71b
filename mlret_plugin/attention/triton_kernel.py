"""Block-sparse FlashAttention-2 in Triton: forward and backward over a BlockLayout's lookup table.

Algorithm. The sequence is cut into blocks of ``layout.block`` tokens. One program owns one query
block of one (batch, head). The forward walks only the key blocks listed for it in ``layout.lut``
(ascending), keeping FlashAttention-2's online softmax: a running row maximum ``m``, a running sum
``l`` of ``exp(s - m)`` and an unnormalised output ``acc``, rescaled by ``exp(m_old - m_new)`` when
the maximum grows. No score matrix larger than one block x block tile ever exists. It writes
``O = acc / l`` and the log-sum-exp ``m + log(l)`` (base 2, as exp2 is the fast path) per query row.
Scores are masked token-exactly inside a tile: keys past the sequence end, padded keys
(``key_padding_mask`` False) and, for windowed layouts, pairs with ``|i - j| > window`` unless one of
them is a global token (``< num_global``).

The backward recomputes the probabilities ``P = exp2(S - lse)`` tile by tile instead of storing them:
a pre-pass computes ``delta = rowsum(O * dO)``; then one program per key block walks the *transposed*
lookup table (the query blocks that list this key block) and accumulates ``dV = P^T dO`` and
``dK = scale * dS^T Q`` with ``dS = P * (dO V^T - delta)``; another program per query block walks the
ordinary table and accumulates ``dQ = scale * dS K``. Every output tile is owned by exactly one
program, so there are no atomics and no races.

Rows with no allowed key at all (e.g. a query block made only of padding, or an empty lut row)
output zeros and receive zero gradient; they are never NaN.

Running it. On CUDA the kernels compile for the GPU (the launch configuration below is written for an
H100; nothing here has been run on a GPU: this project has none). On CPU tensors they run only under
Triton's interpreter, which must be switched on *before triton is first imported* (``TRITON_INTERPRET=1``
in the process environment; importing sentence_transformers already imports triton), fp32 or fp16. That
is how the tests run it; it is slow and meant for correctness checks only.
"""
from __future__ import annotations

import math
import weakref

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from mlret_plugin.attention.layout import BlockLayout

BLOCK_SIZES = (16, 32, 64, 128)
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 128
GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INTERPRETER_DTYPES = (torch.float32, torch.float16)  # the interpreter (numpy) has no bf16


# ---------------------------------------------------------------------------------------------- kernels
# Offsets are int64 from the (batch, head) base on, so tensors over 2**31 elements do not overflow.
# The mask of a tile is spelled out in each kernel (no helper call) because it sits in the inner loop:
# allowed = query row < L & key < L & key is real & (no window | |i - j| <= window | i or j global).


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, LUT, NNZ, KPM,
                sq_b, sq_h, sq_l, sk_b, sk_h, sk_l, sv_b, sv_h, sv_l, so_b, so_h, so_l,
                lut_sh, lut_sq, nnz_sh, nnz_sq, kpm_sb,
                H, L, D, window, num_global, qk_scale,
                BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr, HAS_WINDOW: tl.constexpr,
                PRECISION: tl.constexpr):
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    dims = tl.arange(0, BLOCK_D)
    rows = qb * BLOCK + offs
    row_in = rows < L
    dim_in = dims < D
    row_global = rows < num_global
    q = tl.load(Q + b * sq_b + h * sq_h + rows[:, None] * sq_l + dims[None, :],
                mask=row_in[:, None] & dim_in[None, :], other=0.0)
    k_base = K + b * sk_b + h * sk_h
    v_base = V + b * sv_b + h * sv_h
    k_tile = offs[:, None] * sk_l + dims[None, :]
    v_tile = offs[:, None] * sv_l + dims[None, :]
    kpm_base = KPM + b * kpm_sb
    lut_row = LUT + h * lut_sh + qb * lut_sq
    m_i = tl.full([BLOCK], float("-inf"), tl.float32)
    l_i = tl.full([BLOCK], 0.0, tl.float32)
    acc = tl.full([BLOCK, BLOCK_D], 0.0, tl.float32)
    n = tl.load(NNZ + h * nnz_sh + qb * nnz_sq)
    for j in range(0, n):
        start = tl.load(lut_row + j).to(tl.int64) * BLOCK
        keys = start + offs
        key_ok = keys < L
        kv_mask = key_ok[:, None] & dim_in[None, :]
        k = tl.load(k_base + start * sk_l + k_tile, mask=kv_mask, other=0.0)
        v = tl.load(v_base + start * sv_l + v_tile, mask=kv_mask, other=0.0)
        if HAS_KPM:
            key_ok = key_ok & (tl.load(kpm_base + keys, mask=key_ok, other=0) != 0)
        ok = row_in[:, None] & key_ok[None, :]
        if HAS_WINDOW:
            dist = rows[:, None] - keys[None, :]
            ok = ok & ((dist <= window) & (dist >= -window) | row_global[:, None] | (keys < num_global)[None, :])
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all masked so far: avoid -inf - -inf
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    has_key = l_i > 0.0
    l_safe = tl.where(has_key, l_i, 1.0)
    out = acc / l_safe[:, None]  # rows without keys: acc == 0 -> zeros
    lse = tl.where(has_key, m_i + tl.log2(l_safe), 0.0)
    tl.store(O + b * so_b + h * so_h + rows[:, None] * so_l + dims[None, :], out.to(O.dtype.element_ty),
             mask=row_in[:, None] & dim_in[None, :])
    tl.store(LSE + bh.to(tl.int64) * L + rows, lse, mask=row_in)


@triton.jit
def _bwd_delta_kernel(O, DO, DELTA, so_b, so_h, so_l, sdo_b, sdo_h, sdo_l, H, L, D,
                      BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    rows = qb * BLOCK + tl.arange(0, BLOCK)
    dims = tl.arange(0, BLOCK_D)
    mask = (rows < L)[:, None] & (dims < D)[None, :]
    o = tl.load(O + b * so_b + h * so_h + rows[:, None] * so_l + dims[None, :], mask=mask, other=0.0)
    do = tl.load(DO + b * sdo_b + h * sdo_h + rows[:, None] * sdo_l + dims[None, :], mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh.to(tl.int64) * L + rows, delta, mask=rows < L)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, LUT_T, NNZ_T, KPM,
                     sq_b, sq_h, sq_l, sk_b, sk_h, sk_l, sv_b, sv_h, sv_l, sdo_b, sdo_h, sdo_l,
                     sg_b, sg_h, sg_l,
                     lut_sh, lut_sk, nnz_sh, nnz_sk, kpm_sb,
                     H, L, D, window, num_global, qk_scale, sm_scale,
                     BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr, HAS_WINDOW: tl.constexpr,
                     PRECISION: tl.constexpr):
    kb = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    dims = tl.arange(0, BLOCK_D)
    dim_in = dims < D
    keys = kb * BLOCK + offs
    key_ok = keys < L
    kv_mask = key_ok[:, None] & dim_in[None, :]
    k = tl.load(K + b * sk_b + h * sk_h + keys[:, None] * sk_l + dims[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + b * sv_b + h * sv_h + keys[:, None] * sv_l + dims[None, :], mask=kv_mask, other=0.0)
    if HAS_KPM:
        key_ok = key_ok & (tl.load(KPM + b * kpm_sb + keys, mask=key_ok, other=0) != 0)
    key_global = keys < num_global
    q_base = Q + b * sq_b + h * sq_h
    do_base = DO + b * sdo_b + h * sdo_h
    q_tile = offs[:, None] * sq_l + dims[None, :]
    do_tile = offs[:, None] * sdo_l + dims[None, :]
    row_stats = bh.to(tl.int64) * L
    lut_row = LUT_T + h * lut_sh + kb * lut_sk
    dk = tl.full([BLOCK, BLOCK_D], 0.0, tl.float32)
    dv = tl.full([BLOCK, BLOCK_D], 0.0, tl.float32)
    n = tl.load(NNZ_T + h * nnz_sh + kb * nnz_sk)
    for j in range(0, n):
        start = tl.load(lut_row + j).to(tl.int64) * BLOCK
        rows = start + offs
        row_in = rows < L
        q_mask = row_in[:, None] & dim_in[None, :]
        q = tl.load(q_base + start * sq_l + q_tile, mask=q_mask, other=0.0)
        do = tl.load(do_base + start * sdo_l + do_tile, mask=q_mask, other=0.0)
        lse = tl.load(LSE + row_stats + rows, mask=row_in, other=0.0)
        delta = tl.load(DELTA + row_stats + rows, mask=row_in, other=0.0)
        ok = row_in[:, None] & key_ok[None, :]
        if HAS_WINDOW:
            dist = rows[:, None] - keys[None, :]
            ok = ok & ((dist <= window) & (dist >= -window) | (rows < num_global)[:, None] | key_global[None, :])
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.where(ok, tl.exp2(s - lse[:, None]), 0.0)
        dv += tl.dot(tl.trans(p).to(do.dtype), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
    dk = dk * sm_scale
    g_off = b * sg_b + h * sg_h + keys[:, None] * sg_l + dims[None, :]
    tl.store(DK + g_off, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + g_off, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, LUT, NNZ, KPM,
                   sq_b, sq_h, sq_l, sk_b, sk_h, sk_l, sv_b, sv_h, sv_l, sdo_b, sdo_h, sdo_l,
                   sg_b, sg_h, sg_l,
                   lut_sh, lut_sq, nnz_sh, nnz_sq, kpm_sb,
                   H, L, D, window, num_global, qk_scale, sm_scale,
                   BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr, HAS_WINDOW: tl.constexpr,
                   PRECISION: tl.constexpr):
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    dims = tl.arange(0, BLOCK_D)
    rows = qb * BLOCK + offs
    row_in = rows < L
    dim_in = dims < D
    row_global = rows < num_global
    q_mask = row_in[:, None] & dim_in[None, :]
    q = tl.load(Q + b * sq_b + h * sq_h + rows[:, None] * sq_l + dims[None, :], mask=q_mask, other=0.0)
    do = tl.load(DO + b * sdo_b + h * sdo_h + rows[:, None] * sdo_l + dims[None, :], mask=q_mask, other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * L + rows, mask=row_in, other=0.0)
    delta = tl.load(DELTA + bh.to(tl.int64) * L + rows, mask=row_in, other=0.0)
    k_base = K + b * sk_b + h * sk_h
    v_base = V + b * sv_b + h * sv_h
    k_tile = offs[:, None] * sk_l + dims[None, :]
    v_tile = offs[:, None] * sv_l + dims[None, :]
    kpm_base = KPM + b * kpm_sb
    lut_row = LUT + h * lut_sh + qb * lut_sq
    dq = tl.full([BLOCK, BLOCK_D], 0.0, tl.float32)
    n = tl.load(NNZ + h * nnz_sh + qb * nnz_sq)
    for j in range(0, n):
        start = tl.load(lut_row + j).to(tl.int64) * BLOCK
        keys = start + offs
        key_ok = keys < L
        kv_mask = key_ok[:, None] & dim_in[None, :]
        k = tl.load(k_base + start * sk_l + k_tile, mask=kv_mask, other=0.0)
        v = tl.load(v_base + start * sv_l + v_tile, mask=kv_mask, other=0.0)
        if HAS_KPM:
            key_ok = key_ok & (tl.load(kpm_base + keys, mask=key_ok, other=0) != 0)
        ok = row_in[:, None] & key_ok[None, :]
        if HAS_WINDOW:
            dist = rows[:, None] - keys[None, :]
            ok = ok & ((dist <= window) & (dist >= -window) | row_global[:, None] | (keys < num_global)[None, :])
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.where(ok, tl.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + b * sg_b + h * sg_h + rows[:, None] * sg_l + dims[None, :], dq.to(DQ.dtype.element_ty), mask=q_mask)


# ------------------------------------------------------------------------------------------ host side


SMEM_BUDGET = 200 * 1024  # H100: 228 KB shared memory per SM, minus room for layout conversions


def launch_config(block: int, head_dim: int, elem_bytes: int, backward: bool) -> dict[str, int]:
    """num_warps / num_stages for an H100 (sm_90). Unverified on hardware (no GPU here).

    Warps by tile: 128-token tiles 8, 32/64 4, 16 2. Stages: as many (3, 2, else 1) as fit the
    shared-memory estimate: resident tiles (Q in the forward; K and V in the dK/dV pass) and two
    streamed tiles per stage (K, V forward; Q, dO backward). Score tiles stay in registers.
    """
    tile = block * max(16, triton.next_power_of_2(head_dim)) * elem_bytes
    resident = tile * (2 if backward else 1)
    num_stages = next((st for st in (3, 2) if resident + st * 2 * tile <= SMEM_BUDGET), 1)
    num_warps = 8 if block >= 128 else 4 if block >= 32 else 2
    return {"num_warps": num_warps, "num_stages": num_stages}


def _is_interpreted(kernel) -> bool:
    return type(kernel).__name__ == "InterpretedFunction"


def _check_runtime(device: torch.device) -> None:
    """Errors naming the fix when the kernels cannot run on ``device`` in this process."""
    kernels_interpreted = _is_interpreted(_fwd_kernel)
    stdlib_interpreted = _is_interpreted(tl.standard.zeros)
    if kernels_interpreted != stdlib_interpreted:
        raise RuntimeError(
            "TRITON_INTERPRET changed between importing triton and importing "
            f"{__name__} (triton.language is {'interpreted' if stdlib_interpreted else 'compiled'}, these "
            f"kernels are {'interpreted' if kernels_interpreted else 'compiled'}). Set TRITON_INTERPRET=1 in "
            "the environment before the process imports anything (sentence_transformers imports triton), or "
            "not at all."
        )
    if kernels_interpreted:
        return
    if device.type == "cpu":
        raise RuntimeError(
            "the Triton kernel got CPU tensors: on CPU it runs only under Triton's interpreter (slow, for "
            "tests), which needs TRITON_INTERPRET=1 in the environment before triton is first imported. "
            "For real CPU work use backend='torch'."
        )
    if device.type != "cuda":
        raise RuntimeError(f"the Triton kernel runs on CUDA tensors; got {device.type}. Use backend='torch'.")
    try:
        triton.runtime.driver.active.get_current_target()
    except Exception as exc:  # no GPU driver usable by triton
        raise RuntimeError(
            f"Triton cannot drive this CUDA device ({exc}). Install a triton build matching the CUDA driver, "
            "or use backend='torch'."
        ) from exc


def _check_inputs(q, k, v, layout: BlockLayout, key_padding_mask, scale) -> None:
    """Clear errors for everything the kernels cannot take, before any launch."""
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
    interpreted = _is_interpreted(_fwd_kernel)
    allowed = INTERPRETER_DTYPES if interpreted else GPU_DTYPES
    if q.dtype not in allowed:
        where = "under Triton's interpreter" if interpreted else "on CUDA"
        raise TypeError(f"the Triton kernel takes {', '.join(map(str, allowed))} {where}; got {q.dtype}. "
                        "Cast q/k/v (e.g. .float()) or use backend='torch'.")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in head_dim (stride(-1) == 1); got strides {t.stride()}. "
                             f"Pass {name}.contiguous().")
    B, H, L, D = q.shape
    if not MIN_HEAD_DIM <= D <= MAX_HEAD_DIM:
        raise ValueError(f"the Triton kernel supports head_dim {MIN_HEAD_DIM}..{MAX_HEAD_DIM}; got {D}. "
                         "Use backend='torch'.")
    if L < 1:
        raise ValueError("sequence length must be >= 1")
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout must be a BlockLayout; got {type(layout).__name__}")
    if layout.seq_len != L:
        raise ValueError(f"layout is for seq_len={layout.seq_len}; q has seq_len {L}")
    if layout.block not in BLOCK_SIZES:
        raise ValueError(f"the Triton kernel takes layout blocks {BLOCK_SIZES}; got {layout.block}")
    if layout.heads not in (1, H):
        raise ValueError(f"layout has {layout.heads} heads; q has {H} (expected 1 = shared, or {H})")
    if layout.window is not None and layout.window < 0:
        raise ValueError(f"layout.window must be >= 0 or None; got {layout.window}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            raise ValueError("key_padding_mask must be a bool tensor [batch, seq] (True = real token)")
        if tuple(key_padding_mask.shape) != (B, L):
            raise ValueError(f"key_padding_mask must have shape [batch, seq] = {(B, L)}; got "
                             f"{tuple(key_padding_mask.shape)}")
        if key_padding_mask.device != q.device:
            raise ValueError(f"key_padding_mask is on {key_padding_mask.device}, q on {q.device}")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number or None; got {scale!r}")


# Per layout (by identity) and device: the lookup tables on the device, validated, plus the transposed
# table (query blocks listing each key block) that the dK/dV pass walks.
_TABLES: "weakref.WeakKeyDictionary[BlockLayout, dict]" = weakref.WeakKeyDictionary()


def _validate_lut(layout: BlockLayout) -> None:
    lut, nnz, n = layout.lut, layout.nnz, layout.n_blocks
    if lut.dtype != torch.int32 or nnz.dtype != torch.int32:
        raise ValueError(f"BlockLayout.lut and .nnz must be int32; got {lut.dtype}, {nnz.dtype}")
    if bool((nnz < 0).any()) or bool((nnz > lut.shape[2]).any()):
        raise ValueError(f"BlockLayout.nnz must be in [0, {lut.shape[2]}]")
    listed = torch.arange(lut.shape[2], device=lut.device) < nnz[..., None]
    ids = lut.long()
    if bool(((ids < 0) | (ids >= n))[listed].any()):
        raise ValueError(f"BlockLayout.lut lists key blocks outside [0, {n}) within nnz")
    ascending = ids[..., 1:] > ids[..., :-1]
    if bool((~ascending & listed[..., 1:]).any()):
        raise ValueError("BlockLayout.lut rows must be strictly ascending key-block ids (no repeats)")


def transposed_lut(layout: BlockLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """(lut_t int32 [H, n_blocks, max_nnz_t], nnz_t int32 [H, n_blocks]): query blocks listing each key block."""
    bm_t = layout.block_mask().transpose(1, 2)  # [H, key block, query block]
    n = layout.n_blocks
    ids = torch.arange(n).expand_as(bm_t)
    ids = torch.where(bm_t, ids, torch.full_like(ids, n)).sort(dim=2).values
    nnz_t = bm_t.sum(2).to(torch.int32)
    width = max(int(nnz_t.max()), 1)
    lut_t = ids[..., :width]
    lut_t = torch.where(lut_t >= n, torch.full_like(lut_t, -1), lut_t).to(torch.int32)
    return lut_t.contiguous(), nnz_t.contiguous()


def _tables(layout: BlockLayout, device: torch.device) -> dict:
    per_device = _TABLES.setdefault(layout, {})
    if device not in per_device:
        _validate_lut(layout)
        lut_t, nnz_t = transposed_lut(layout)
        per_device[device] = {
            "lut": layout.lut.to(device=device, dtype=torch.int32).contiguous(),
            "nnz": layout.nnz.to(device=device, dtype=torch.int32).contiguous(),
            "lut_t": lut_t.to(device),
            "nnz_t": nnz_t.to(device),
        }
    return per_device[device]


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: full-precision dots unless the user opted into TF32 for matmuls, as torch does.
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def _common(q, layout, key_padding_mask):
    B, H, L, D = q.shape
    tables = _tables(layout, q.device)
    shared = layout.heads == 1
    kpm = key_padding_mask.to(torch.int8).contiguous() if key_padding_mask is not None else None
    return {
        "B": B, "H": H, "L": L, "D": D, "tables": tables, "shared": shared, "kpm": kpm,
        "BLOCK_D": max(16, triton.next_power_of_2(D)),
        "window": -1 if layout.window is None else int(layout.window),
    }


def _forward(q, k, v, layout: BlockLayout, kpm, scale: float):
    c = _common(q, layout, kpm)
    B, H, L, D, t = c["B"], c["H"], c["L"], c["D"], c["tables"]
    o = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B * H, L), dtype=torch.float32, device=q.device)
    lut, nnz = t["lut"], t["nnz"]
    grid = (layout.n_blocks, B * H)
    _fwd_kernel[grid](
        q, k, v, o, lse, lut, nnz, c["kpm"] if c["kpm"] is not None else lut,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
        0 if c["shared"] else lut.stride(0), lut.stride(1), 0 if c["shared"] else nnz.stride(0), nnz.stride(1),
        c["kpm"].stride(0) if c["kpm"] is not None else 0,
        H, L, D, c["window"], int(layout.num_global), scale * math.log2(math.e),
        BLOCK=layout.block, BLOCK_D=c["BLOCK_D"], HAS_KPM=c["kpm"] is not None, HAS_WINDOW=layout.window is not None,
        PRECISION=_precision(q.dtype), **launch_config(layout.block, D, q.element_size(), backward=False),
    )
    return o, lse


def _backward(do, q, k, v, o, lse, layout: BlockLayout, kpm, scale: float):
    c = _common(q, layout, kpm)
    B, H, L, D, t = c["B"], c["H"], c["L"], c["D"], c["tables"]
    if do.stride(-1) != 1:
        do = do.contiguous()
    delta = torch.empty((B * H, L), dtype=torch.float32, device=q.device)
    grid = (layout.n_blocks, B * H)
    _bwd_delta_kernel[grid](o, do, delta, *o.stride()[:3], *do.stride()[:3], H, L, D,
                            BLOCK=layout.block, BLOCK_D=c["BLOCK_D"])
    dq = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    kpm_ptr = c["kpm"] if c["kpm"] is not None else t["lut"]
    kpm_sb = c["kpm"].stride(0) if c["kpm"] is not None else 0
    shared = c["shared"]
    common = dict(BLOCK=layout.block, BLOCK_D=c["BLOCK_D"], HAS_KPM=c["kpm"] is not None,
                  HAS_WINDOW=layout.window is not None, PRECISION=_precision(q.dtype),
                  **launch_config(layout.block, D, q.element_size(), backward=True))
    scalars = (H, L, D, c["window"], int(layout.num_global), scale * math.log2(math.e), scale)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3], *dq.stride()[:3])
    lut_t, nnz_t = t["lut_t"], t["nnz_t"]
    _bwd_dkdv_kernel[grid](
        q, k, v, do, lse, delta, dk, dv, lut_t, nnz_t, kpm_ptr, *strides,
        0 if shared else lut_t.stride(0), lut_t.stride(1), 0 if shared else nnz_t.stride(0), nnz_t.stride(1), kpm_sb,
        *scalars, **common,
    )
    lut, nnz = t["lut"], t["nnz"]
    _bwd_dq_kernel[grid](
        q, k, v, do, lse, delta, dq, lut, nnz, kpm_ptr, *strides,
        0 if shared else lut.stride(0), lut.stride(1), 0 if shared else nnz.stride(0), nnz.stride(1), kpm_sb,
        *scalars, **common,
    )
    return dq, dk, dv


class BlockSparseAttention(torch.autograd.Function):
    """Autograd for the kernels: saves q, k, v, O and the log-sum-exp; the backward recomputes P per tile."""

    @staticmethod
    def forward(ctx, q, k, v, layout, key_padding_mask, scale):
        o, lse = _forward(q, k, v, layout, key_padding_mask, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.layout = layout
        ctx.key_padding_mask = key_padding_mask
        ctx.scale = scale
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse, ctx.layout, ctx.key_padding_mask, ctx.scale)
        return dq, dk, dv, None, None, None


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of ``q, k, v`` [B, H, L, D] over ``layout``'s blocks, by the Triton kernels; differentiable.

    ``key_padding_mask``: bool [B, L], True = real token. ``scale`` defaults to 1/sqrt(D). Query rows
    with no allowed key output zeros (and get zero gradient). CUDA: fp32/fp16/bf16, head_dim 16..128.
    CPU: only under ``TRITON_INTERPRET=1`` set before triton is imported, fp32/fp16 (for tests).
    """
    _check_inputs(q, k, v, layout, key_padding_mask, scale)
    _tables(layout, q.device)  # validates the lookup table (once per layout and device)
    _check_runtime(q.device)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return BlockSparseAttention.apply(q, k, v, layout, key_padding_mask, scale)


def interpreted() -> bool:
    """True when this process imported the kernels under Triton's interpreter (TRITON_INTERPRET=1)."""
    return _is_interpreted(_fwd_kernel)
