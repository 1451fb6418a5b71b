"""Block-sparse FlashAttention-2 in Triton: forward and backward over a BlockLayout's lookup table.

Algorithm. The sequence is cut into blocks of ``layout.block`` tokens; ``layout.lut`` lists, per query
block, the key blocks it attends to (ascending). The kernels work in tiles that are decoupled from the
layout block: one program owns ``BLOCK_M`` query rows of one (batch, head), a tile inside one layout
block, and walks the listed key blocks as ``BLOCK_N``-key sub-tiles (a 128-token block as two 64-key
tiles, say), keeping FlashAttention-2's online softmax: a running row maximum ``m``, a running sum ``l``
of ``exp(s - m)`` and an unnormalised output ``acc``, rescaled by ``exp(m_old - m_new)`` when the
maximum grows. No score matrix larger than one BLOCK_M x BLOCK_N tile ever exists. It writes
``O = acc / l`` and the log-sum-exp ``m + log(l)`` (base 2, as exp2 is the fast path) per query row.
Scores are masked token-exactly inside a tile: keys past the sequence end, padded keys
(``key_padding_mask`` False) and, for windowed layouts, pairs with ``|i - j| > window`` unless one of
them is a global token (``< num_global``).

The backward recomputes the probabilities ``P = exp2(S - lse)`` tile by tile instead of storing them:
a pre-pass computes ``delta = rowsum(O * dO)``; then one program per BLOCK_N-key tile walks the
*transposed* lookup table (the query blocks that list its key block, as BLOCK_M-row sub-tiles) and
accumulates ``dV = P^T dO`` and ``dK = scale * dS^T Q`` with ``dS = P * (dO V^T - delta)``; another
program per BLOCK_M-row query tile walks the ordinary table and accumulates ``dQ = scale * dS K``. Every
output tile is owned by exactly one program, so there are no atomics and no races.

Rows with no allowed key at all (e.g. a query block made only of padding, or an empty lut row)
output zeros and receive zero gradient; they are never NaN.

Launch configuration. BLOCK_M, BLOCK_N, warps and stages per kernel, GPU (sm_80, sm_90), element size,
layout block and head_dim come from ``KERNEL_CONFIGS``, a table chosen from compiled figures: every
entry was compiled for its GPU on a CPU machine by the ptxas in the triton wheel and read back with
cuobjdump (``mlret_plugin.attention.triton_aot``, ``benchmarks/triton_aot.py``): fp16 / bf16 entries
spill no register, and every entry's shared memory fits the GPU. Nothing here has run on a GPU yet
(``benchmarks/gpu_check.py`` is the one-shot check for that day).

Running it. On CUDA the kernels compile for the GPU. On CPU tensors they run only under Triton's
interpreter, which must be switched on *before triton is first imported* (``TRITON_INTERPRET=1`` in the
process environment; importing sentence_transformers already imports triton), fp32 or fp16. That is
how the tests run it; it is slow and meant for correctness checks only.
"""
from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass

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
# Tiles are decoupled from the layout block: a program owns BLOCK_M query rows (or, in dK/dV, BLOCK_N keys)
# of one layout block, and walks each listed layout block as BLOCK // BLOCK_N key (BLOCK // BLOCK_M query)
# sub-tiles in one flat loop, which triton software-pipelines. Tile sizes, warps and stages per GPU come
# from compiled figures (KERNEL_CONFIGS). The (batch, head) base offset and the tile start are int64
# scalars, so tensors over 2**31 elements do not overflow, while the per-element offsets inside a tile stay
# int32 (fewer registers). HEAD_DIM is a constexpr: when it equals BLOCK_D the head_dim mask folds away and
# loads vectorise. The mask of a tile is spelled out in each kernel (no helper call) because it sits in the
# inner loop: allowed = query < L & key < L & key is real & (no window | |i - j| <= window | i or j global).


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, LUT, NNZ, KPM,
                sq_b, sq_h, sq_l, sk_b, sk_h, sk_l, sv_b, sv_h, sv_l, so_b, so_h, so_l,
                lut_sh, lut_sq, nnz_sh, nnz_sq, kpm_sb,
                H, L, window, num_global, qk_scale,
                BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr, HAS_WINDOW: tl.constexpr, PRECISION: tl.constexpr):
    SPLIT_N: tl.constexpr = BLOCK // BLOCK_N
    qt = tl.program_id(0)  # query tile; its layout block is qt // (BLOCK // BLOCK_M)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    qb = qt // (BLOCK // BLOCK_M)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    dim_in = dims < HEAD_DIM
    first = qt * BLOCK_M
    rows = first + offs_m
    row_in = rows < L
    row_global = rows < num_global
    q = tl.load(Q + b * sq_b + h * sq_h + first.to(tl.int64) * sq_l + offs_m[:, None] * sq_l + dims[None, :],
                mask=row_in[:, None] & dim_in[None, :], other=0.0)
    k_base = K + b * sk_b + h * sk_h
    v_base = V + b * sv_b + h * sv_h
    k_tile = offs_n[:, None] * sk_l + dims[None, :]
    v_tile = offs_n[:, None] * sv_l + dims[None, :]
    kpm_base = KPM + b * kpm_sb
    lut_row = LUT + h * lut_sh + qb * lut_sq
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.full([BLOCK_M], 0.0, tl.float32)
    acc = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    n_tiles = tl.load(NNZ + h * nnz_sh + qb * nnz_sq) * SPLIT_N
    for t in range(0, n_tiles):
        start = tl.load(lut_row + t // SPLIT_N) * BLOCK + (t % SPLIT_N) * BLOCK_N
        keys = start + offs_n
        key_ok = keys < L
        kv_mask = key_ok[:, None] & dim_in[None, :]
        k = tl.load(k_base + start.to(tl.int64) * sk_l + k_tile, mask=kv_mask, other=0.0)
        v = tl.load(v_base + start.to(tl.int64) * sv_l + v_tile, mask=kv_mask, other=0.0)
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
    tl.store(O + b * so_b + h * so_h + first.to(tl.int64) * so_l + offs_m[:, None] * so_l + dims[None, :],
             out.to(O.dtype.element_ty), mask=row_in[:, None] & dim_in[None, :])
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
                     H, L, window, num_global, qk_scale, sm_scale,
                     BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                     BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr, HAS_WINDOW: tl.constexpr,
                     PRECISION: tl.constexpr):
    # Transposed as in triton's fused-attention tutorial: scores are [keys, queries] tiles, Q and dO are
    # loaded transposed where a dot needs them so, and no computed tile is ever transposed in registers.
    SPLIT_M: tl.constexpr = BLOCK // BLOCK_M
    kt = tl.program_id(0)  # key tile; its layout block is kt // (BLOCK // BLOCK_N)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    kb = kt // (BLOCK // BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    dim_in = dims < HEAD_DIM
    first = kt * BLOCK_N
    keys = first + offs_n
    key_ok = keys < L
    kv_mask = key_ok[:, None] & dim_in[None, :]
    k = tl.load(K + b * sk_b + h * sk_h + first.to(tl.int64) * sk_l + offs_n[:, None] * sk_l + dims[None, :],
                mask=kv_mask, other=0.0)
    v = tl.load(V + b * sv_b + h * sv_h + first.to(tl.int64) * sv_l + offs_n[:, None] * sv_l + dims[None, :],
                mask=kv_mask, other=0.0)
    if HAS_KPM:
        key_ok = key_ok & (tl.load(KPM + b * kpm_sb + keys, mask=key_ok, other=0) != 0)
    key_global = keys < num_global
    q_base = Q + b * sq_b + h * sq_h
    do_base = DO + b * sdo_b + h * sdo_h
    qT_tile = dims[:, None] + offs_m[None, :] * sq_l
    do_tile = offs_m[:, None] * sdo_l + dims[None, :]
    row_stats = bh.to(tl.int64) * L
    lut_row = LUT_T + h * lut_sh + kb * lut_sk
    dk = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    dv = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    n_tiles = tl.load(NNZ_T + h * nnz_sh + kb * nnz_sk) * SPLIT_M
    for t in range(0, n_tiles):
        start = tl.load(lut_row + t // SPLIT_M) * BLOCK + (t % SPLIT_M) * BLOCK_M
        rows = start + offs_m
        row_in = rows < L
        qT = tl.load(q_base + start.to(tl.int64) * sq_l + qT_tile, mask=dim_in[:, None] & row_in[None, :], other=0.0)
        do = tl.load(do_base + start.to(tl.int64) * sdo_l + do_tile, mask=row_in[:, None] & dim_in[None, :],
                     other=0.0)
        lse = tl.load(LSE + row_stats + rows, mask=row_in, other=0.0)
        delta = tl.load(DELTA + row_stats + rows, mask=row_in, other=0.0)
        ok = key_ok[:, None] & row_in[None, :]
        if HAS_WINDOW:
            dist = rows[None, :] - keys[:, None]
            ok = ok & ((dist <= window) & (dist >= -window) | key_global[:, None] | (rows < num_global)[None, :])
        sT = tl.dot(k, qT, input_precision=PRECISION) * qk_scale
        pT = tl.where(ok, tl.exp2(sT - lse[None, :]), 0.0)
        dv += tl.dot(pT.to(do.dtype), do, input_precision=PRECISION)
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dsT = pT * (dpT - delta[None, :])
        dk += tl.dot(dsT.to(qT.dtype), tl.trans(qT), input_precision=PRECISION)
    dk = dk * sm_scale
    g_off = b * sg_b + h * sg_h + first.to(tl.int64) * sg_l + offs_n[:, None] * sg_l + dims[None, :]
    tl.store(DK + g_off, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + g_off, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, LUT, NNZ, KPM,
                   sq_b, sq_h, sq_l, sk_b, sk_h, sk_l, sv_b, sv_h, sv_l, sdo_b, sdo_h, sdo_l,
                   sg_b, sg_h, sg_l,
                   lut_sh, lut_sq, nnz_sh, nnz_sq, kpm_sb,
                   H, L, window, num_global, qk_scale, sm_scale,
                   BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_D: tl.constexpr, HAS_KPM: tl.constexpr, HAS_WINDOW: tl.constexpr,
                   PRECISION: tl.constexpr):
    # K and V are loaded transposed ([head_dim, keys]) for the two score dots, as in the tutorial's dQ pass.
    SPLIT_N: tl.constexpr = BLOCK // BLOCK_N
    qt = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    qb = qt // (BLOCK // BLOCK_M)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    dim_in = dims < HEAD_DIM
    first = qt * BLOCK_M
    rows = first + offs_m
    row_in = rows < L
    row_global = rows < num_global
    q_mask = row_in[:, None] & dim_in[None, :]
    q = tl.load(Q + b * sq_b + h * sq_h + first.to(tl.int64) * sq_l + offs_m[:, None] * sq_l + dims[None, :],
                mask=q_mask, other=0.0)
    do = tl.load(DO + b * sdo_b + h * sdo_h + first.to(tl.int64) * sdo_l + offs_m[:, None] * sdo_l + dims[None, :],
                 mask=q_mask, other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * L + rows, mask=row_in, other=0.0)
    delta = tl.load(DELTA + bh.to(tl.int64) * L + rows, mask=row_in, other=0.0)
    k_base = K + b * sk_b + h * sk_h
    v_base = V + b * sv_b + h * sv_h
    kT_tile = dims[:, None] + offs_n[None, :] * sk_l
    vT_tile = dims[:, None] + offs_n[None, :] * sv_l
    kpm_base = KPM + b * kpm_sb
    lut_row = LUT + h * lut_sh + qb * lut_sq
    dq = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    n_tiles = tl.load(NNZ + h * nnz_sh + qb * nnz_sq) * SPLIT_N
    for t in range(0, n_tiles):
        start = tl.load(lut_row + t // SPLIT_N) * BLOCK + (t % SPLIT_N) * BLOCK_N
        keys = start + offs_n
        key_ok = keys < L
        kvT_mask = dim_in[:, None] & key_ok[None, :]
        kT = tl.load(k_base + start.to(tl.int64) * sk_l + kT_tile, mask=kvT_mask, other=0.0)
        vT = tl.load(v_base + start.to(tl.int64) * sv_l + vT_tile, mask=kvT_mask, other=0.0)
        if HAS_KPM:
            key_ok = key_ok & (tl.load(kpm_base + keys, mask=key_ok, other=0) != 0)
        ok = row_in[:, None] & key_ok[None, :]
        if HAS_WINDOW:
            dist = rows[:, None] - keys[None, :]
            ok = ok & ((dist <= window) & (dist >= -window) | row_global[:, None] | (keys < num_global)[None, :])
        s = tl.dot(q, kT, input_precision=PRECISION) * qk_scale
        p = tl.where(ok, tl.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, vT, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kT.dtype), tl.trans(kT), input_precision=PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + b * sg_b + h * sg_h + first.to(tl.int64) * sg_l + offs_m[:, None] * sg_l + dims[None, :],
             dq.to(DQ.dtype.element_ty), mask=q_mask)


# ------------------------------------------------------------------------------------------ host side


class UnsupportedConfig(ValueError):
    """The launcher refuses this (arch, dtype, block, head_dim) on purpose; the message names the fix."""


TABLE_ARCHS = (80, 90)  # the GPUs the table below was compiled for: A100 (sm_80), H100 (sm_90)
SMEM_BUDGET = 200 * 1024  # shared memory per SM the table plans with: H100's 228 KB minus room for conversions

# (kernel, arch, layout block, head_dim class) -> (BLOCK_M, BLOCK_N, num_warps, num_stages) for fp16 / bf16.
# Chosen by `python benchmarks/triton_aot.py --search` from compiled figures (ptxas for sm_80 / sm_90), not
# from an estimate: the first tile candidate (most work per program first) that compiles with no spill at
# 2 stages, for head_dim 64 (class 64) or 128 and 96 (class 128), padding and window masks on and off; then 3
# stages if that still spills nothing and two programs fit one SM (min(SM, SMEM_BUDGET)). fp32 takes the same
# tile capped at 32 x 32, at most 4 warps and one stage: it fits shared memory everywhere (checked by the full
# grid). Its IEEE dots run on the FMA units and still spill at head_dim 96 / 128 (up to ~1.6 KB of stack; at a
# 64 x 64 cap up to 15 KB): fp32 on GPU is the slow, exact path, never spill-free in this kernel.
KERNEL_CONFIGS: dict[tuple[str, int, int, int], tuple[int, int, int, int]] = {
    # compiled figures (masks on) per head_dim: registers r, stack bytes, shared-memory bytes. With the masks
    # off, every entry is checked by the full grid (benchmarks/triton_aot.py); one entry changed for it.
    ("fwd", 80, 16, 64): (16, 16, 2, 3),  # d64: 72r 0 10752
    ("dkdv", 80, 16, 64): (16, 16, 2, 3),  # d64: 112r 0 12544
    ("dq", 80, 16, 64): (16, 16, 2, 3),  # d64: 86r 0 12288
    ("fwd", 80, 16, 128): (16, 16, 2, 3),  # d128: 128r 0 20992, d96: 128r 0 20992
    ("dkdv", 80, 16, 128): (16, 16, 2, 3),  # d128: 199r 0 24832, d96: 199r 0 24832
    ("dq", 80, 16, 128): (16, 16, 2, 3),  # d128: 132r 0 24576, d96: 128r 0 24576
    ("fwd", 80, 32, 64): (32, 32, 4, 3),  # d64: 96r 0 22528
    ("dkdv", 80, 32, 64): (32, 32, 4, 3),  # d64: 142r 0 23040
    ("dq", 80, 32, 64): (32, 32, 4, 3),  # d64: 96r 0 22528
    ("fwd", 80, 32, 128): (32, 32, 4, 3),  # d128: 168r 0 43008, d96: 168r 0 43008
    ("dkdv", 80, 32, 128): (32, 32, 4, 3),  # d128: 196r 0 45568, d96: 196r 0 45568
    ("dq", 80, 32, 128): (32, 32, 4, 3),  # d128: 168r 0 45056, d96: 168r 0 45056
    ("fwd", 80, 64, 64): (64, 64, 4, 3),  # d64: 181r 0 40960
    ("dkdv", 80, 64, 64): (32, 64, 4, 3),  # d64: 213r 0 31232
    ("dq", 80, 64, 64): (64, 32, 4, 3),  # d64: 196r 0 30720, d64 unmasked: 185r 0 30720 (64 x 64 spilled unmasked)
    ("fwd", 80, 64, 128): (64, 64, 4, 2),  # d128: 255r 0 57344, d96: 255r 0 57344
    ("dkdv", 80, 64, 128): (32, 32, 4, 3),  # d128: 194r 0 45568, d96: 194r 0 45568
    ("dq", 80, 64, 128): (64, 32, 4, 3),  # d128: 224r 0 61440, d96: 221r 0 61440
    ("fwd", 80, 128, 64): (128, 64, 8, 3),  # d64: 173r 0 49152
    ("dkdv", 80, 128, 64): (32, 128, 8, 3),  # d64: 214r 0 49664
    ("dq", 80, 128, 64): (128, 32, 8, 3),  # d64: 175r 0 49152
    ("fwd", 80, 128, 128): (64, 64, 4, 2),  # d128: 255r 0 57344, d96: 255r 0 57344
    ("dkdv", 80, 128, 128): (32, 32, 4, 3),  # d128: 194r 0 45568, d96: 194r 0 45568
    ("dq", 80, 128, 128): (128, 32, 8, 2),  # d128: 237r 0 86016, d96: 232r 0 86016
    ("fwd", 90, 16, 64): (16, 16, 2, 3),  # d64: 72r 0 10752
    ("dkdv", 90, 16, 64): (16, 16, 2, 3),  # d64: 114r 0 12544
    ("dq", 90, 16, 64): (16, 16, 2, 3),  # d64: 80r 0 12288
    ("fwd", 90, 16, 128): (16, 16, 2, 3),  # d128: 108r 0 20992, d96: 110r 0 20992
    ("dkdv", 90, 16, 128): (16, 16, 2, 3),  # d128: 204r 0 24832, d96: 202r 0 24832
    ("dq", 90, 16, 128): (16, 16, 2, 3),  # d128: 134r 0 24576, d96: 136r 0 24576
    ("fwd", 90, 32, 64): (32, 32, 4, 3),  # d64: 102r 0 22528
    ("dkdv", 90, 32, 64): (32, 32, 4, 3),  # d64: 146r 0 23040
    ("dq", 90, 32, 64): (32, 32, 4, 3),  # d64: 98r 0 22528
    ("fwd", 90, 32, 128): (32, 32, 4, 3),  # d128: 144r 0 43008, d96: 144r 0 43008
    ("dkdv", 90, 32, 128): (32, 32, 4, 3),  # d128: 198r 0 45568, d96: 198r 0 45568
    ("dq", 90, 32, 128): (32, 32, 4, 3),  # d128: 162r 0 45056, d96: 166r 0 45056
    ("fwd", 90, 64, 64): (64, 64, 4, 3),  # d64: 168r 0 57344
    ("dkdv", 90, 64, 64): (64, 64, 4, 3),  # d64: 235r 0 66560
    ("dq", 90, 64, 64): (64, 64, 4, 3),  # d64: 145r 0 65536
    ("fwd", 90, 64, 128): (64, 64, 4, 2),  # d128: 198r 0 81920, d96: 178r 0 81920
    ("dkdv", 90, 64, 128): (32, 64, 4, 3),  # d128: 247r 0 82432, d96: 248r 0 82432
    ("dq", 90, 64, 128): (64, 64, 4, 2),  # d128: 224r 0 98304, d96: 224r 0 98304
    ("fwd", 90, 128, 64): (128, 64, 8, 3),  # d64: 157r 0 65536
    ("dkdv", 90, 128, 64): (32, 128, 8, 3),  # d64: 145r 0 57856
    ("dq", 90, 128, 64): (128, 32, 8, 3),  # d64: 101r 0 57344
    ("fwd", 90, 128, 128): (128, 64, 8, 2),  # d128: 208r 0 98304, d96: 207r 0 98304
    ("dkdv", 90, 128, 128): (32, 128, 8, 2),  # d128: 227r 0 98560, d96: 228r 0 98560
    ("dq", 90, 128, 128): (128, 32, 8, 2),  # d128: 139r 0 98304, d96: 139r 0 98304
}
FP32_TILE_CAP = 32  # fp32 tiles: at most 32 x 32 (see the table comment)


HEAD_DIM_CLASSES = (64, 128)  # table rows: head_dim <= 64 and 65..128 (searched at 64, and at 128 and 96)


def block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def head_dim_class(head_dim: int) -> int:
    return next((c for c in HEAD_DIM_CLASSES if head_dim <= c), head_dim)  # > 128: no row, refused


def table_arch(arch: int) -> int:
    """The table an arch uses: its own, or the nearest compiled one below it (sm_86/89 -> 80, sm_100 -> 90)."""
    return max((a for a in TABLE_ARCHS if a <= arch), default=TABLE_ARCHS[0])


def kernel_config(kernel: str, arch: int, elem_bytes: int, block: int, head_dim: int) -> dict[str, int]:
    """BLOCK_M, BLOCK_N, num_warps, num_stages for ``kernel`` ("fwd" | "dkdv" | "dq") on sm_``arch``."""
    key = (kernel, table_arch(arch), block, head_dim_class(head_dim))
    if key not in KERNEL_CONFIGS or elem_bytes not in (2, 4):
        raise UnsupportedConfig(
            f"no compiled configuration for the {kernel} kernel on sm_{arch} with {elem_bytes}-byte elements, "
            f"layout block {block}, head_dim {head_dim}: a configuration that spills or does not fit the GPU's "
            "shared memory is refused. Use a smaller layout block, fp16/bf16, or backend='torch'."
        )
    block_m, block_n, num_warps, num_stages = KERNEL_CONFIGS[key]
    if elem_bytes == 4:
        block_m, block_n = min(block_m, FP32_TILE_CAP), min(block_n, FP32_TILE_CAP)
        num_warps, num_stages = min(num_warps, 4), 1
    return {"BLOCK_M": block_m, "BLOCK_N": block_n, "num_warps": num_warps, "num_stages": num_stages}


def launch_config(block: int, head_dim: int, elem_bytes: int, backward: bool, arch: int = 90) -> dict[str, int]:
    """The configuration of the forward kernel, or of the dK/dV kernel (``backward``), on sm_``arch``."""
    return kernel_config("dkdv" if backward else "fwd", arch, elem_bytes, block, head_dim)


_WARNED_ARCHS: set[int] = set()


def _warn_untabled_arch(arch: int) -> None:
    if arch not in TABLE_ARCHS and arch not in _WARNED_ARCHS:
        _WARNED_ARCHS.add(arch)
        warnings.warn(f"the Triton kernel's launch table was compiled for sm_80 and sm_90; this GPU is sm_{arch}, so "
                      f"it runs sm_{table_arch(arch)}'s configuration, unchecked for spills and shared memory here. "
                      f"Check it with mlret_plugin.attention.triton_aot (GPUTarget('cuda', {arch}, 32)) or use "
                      "backend='torch'.", RuntimeWarning, stacklevel=4)


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
    from mlret_plugin.attention.functional import check_key_padding_mask, check_qkv

    check_qkv(q, k, v)
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
    _, H, L, D = q.shape
    if not MIN_HEAD_DIM <= D <= MAX_HEAD_DIM:
        raise ValueError(f"the Triton kernel supports head_dim {MIN_HEAD_DIM}..{MAX_HEAD_DIM}; got {D}. "
                         "Use backend='torch'.")
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
    check_key_padding_mask(key_padding_mask, q)
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


def device_arch(device: torch.device) -> int:
    """Compute capability as 80 / 90 / ...; 90 off CUDA (the interpreter ignores warps and stages)."""
    if device.type != "cuda" or interpreted():
        return 90
    major, minor = torch.cuda.get_device_capability(device)
    _warn_untabled_arch(major * 10 + minor)
    return major * 10 + minor


@dataclass(frozen=True)
class Launch:
    """One kernel launch as the host code builds it: run it, or compile it ahead of time (``triton_aot``)."""

    name: str  # "fwd", "delta", "dkdv", "dq"
    kernel: object
    grid: tuple
    args: tuple
    options: dict  # constexprs, num_warps, num_stages

    def run(self) -> None:
        self.kernel[self.grid](*self.args, **self.options)


def forward_launch(q, k, v, o, lse, layout: BlockLayout, kpm, scale: float, arch: int,
                   config: dict | None = None) -> Launch:
    """The forward kernel's launch; ``config`` (BLOCK_M, BLOCK_N, warps, stages) overrides the table's."""
    c = _common(q, layout, kpm)
    B, H, L, D, t = c["B"], c["H"], c["L"], c["D"], c["tables"]
    cfg = config or kernel_config("fwd", arch, q.element_size(), layout.block, D)
    lut, nnz = t["lut"], t["nnz"]
    args = (
        q, k, v, o, lse, lut, nnz, c["kpm"] if c["kpm"] is not None else lut,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
        0 if c["shared"] else lut.stride(0), lut.stride(1), 0 if c["shared"] else nnz.stride(0), nnz.stride(1),
        c["kpm"].stride(0) if c["kpm"] is not None else 0,
        H, L, c["window"], int(layout.num_global), scale * math.log2(math.e),
    )
    options = dict(BLOCK=layout.block, HEAD_DIM=D, BLOCK_D=c["BLOCK_D"], HAS_KPM=c["kpm"] is not None,
                   HAS_WINDOW=layout.window is not None, PRECISION=_precision(q.dtype), **cfg)
    return Launch("fwd", _fwd_kernel, (layout.n_blocks * (layout.block // cfg["BLOCK_M"]), B * H), args, options)


def backward_launches(do, q, k, v, o, lse, delta, dq, dk, dv, layout: BlockLayout, kpm, scale: float,
                      arch: int, configs: dict | None = None) -> list[Launch]:
    """The delta, dK/dV and dQ launches; ``configs`` ({"dkdv": ..., "dq": ...}) overrides the table's."""
    c = _common(q, layout, kpm)
    B, H, L, D, t = c["B"], c["H"], c["L"], c["D"], c["tables"]
    configs = configs or {name: kernel_config(name, arch, q.element_size(), layout.block, D) for name in ("dkdv", "dq")}
    delta_block = min(layout.block, 64)
    delta_launch = Launch("delta", _bwd_delta_kernel, (-(-L // delta_block), B * H),
                          (o, do, delta, *o.stride()[:3], *do.stride()[:3], H, L, D),
                          dict(BLOCK=delta_block, BLOCK_D=c["BLOCK_D"]))
    kpm_ptr = c["kpm"] if c["kpm"] is not None else t["lut"]
    kpm_sb = c["kpm"].stride(0) if c["kpm"] is not None else 0
    shared = c["shared"]
    common = dict(BLOCK=layout.block, HEAD_DIM=D, BLOCK_D=c["BLOCK_D"], HAS_KPM=c["kpm"] is not None,
                  HAS_WINDOW=layout.window is not None, PRECISION=_precision(q.dtype))
    scalars = (H, L, c["window"], int(layout.num_global), scale * math.log2(math.e), scale)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3], *dq.stride()[:3])
    lut_t, nnz_t = t["lut_t"], t["nnz_t"]
    cfg = configs["dkdv"]
    dkdv = Launch("dkdv", _bwd_dkdv_kernel, (layout.n_blocks * (layout.block // cfg["BLOCK_N"]), B * H), (
        q, k, v, do, lse, delta, dk, dv, lut_t, nnz_t, kpm_ptr, *strides,
        0 if shared else lut_t.stride(0), lut_t.stride(1), 0 if shared else nnz_t.stride(0), nnz_t.stride(1), kpm_sb,
        *scalars), {**common, **cfg})
    lut, nnz = t["lut"], t["nnz"]
    cfg = configs["dq"]
    dq_launch = Launch("dq", _bwd_dq_kernel, (layout.n_blocks * (layout.block // cfg["BLOCK_M"]), B * H), (
        q, k, v, do, lse, delta, dq, lut, nnz, kpm_ptr, *strides,
        0 if shared else lut.stride(0), lut.stride(1), 0 if shared else nnz.stride(0), nnz.stride(1), kpm_sb,
        *scalars), {**common, **cfg})
    return [delta_launch, dkdv, dq_launch]


def _forward(q, k, v, layout: BlockLayout, kpm, scale: float):
    B, H, L, D = q.shape
    o = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B * H, L), dtype=torch.float32, device=q.device)
    forward_launch(q, k, v, o, lse, layout, kpm, scale, device_arch(q.device)).run()
    return o, lse


def _backward(do, q, k, v, o, lse, layout: BlockLayout, kpm, scale: float):
    B, H, L, D = q.shape
    if do.stride(-1) != 1:
        do = do.contiguous()
    delta = torch.empty((B * H, L), dtype=torch.float32, device=q.device)
    dq = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    for launch in backward_launches(do, q, k, v, o, lse, delta, dq, dk, dv, layout, kpm, scale, device_arch(q.device)):
        launch.run()
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
    arch = device_arch(q.device)
    for kernel in ("fwd", "dkdv", "dq"):  # refused configurations fail here, not halfway through a backward
        kernel_config(kernel, arch, q.element_size(), layout.block, q.shape[-1])
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return BlockSparseAttention.apply(q, k, v, layout, key_padding_mask, scale)


def interpreted() -> bool:
    """True when this process imported the kernels under Triton's interpreter (TRITON_INTERPRET=1)."""
    return _is_interpreted(_fwd_kernel)
