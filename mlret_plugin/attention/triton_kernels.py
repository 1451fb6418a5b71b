"""Block-sparse FlashAttention-2 in Triton: the kernels (forward, backward delta, dK/dV, dQ).

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
"""
from __future__ import annotations

import triton
import triton.language as tl


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
