"""Gauge attention as one fused Triton kernel: softmax attention with the gauge's per-key terms inside the
flash loop, forward and backward.

Score in natural-log units (`beliefs.augmented_parts`): `s_ij = scale * (q_i . k_j + qe_i . ke_j + c_j)`, with
`q`, `k` the (rotated, variance-scaled) means at head_dim, `c_j` the key constant in fp32, and `qe`, `ke` the
per-token-variance terms of the learned form (one per irrep block, fp32; absent in the parameter-free form and
with token-independent variances). SDPA can take these terms only as extra key dims (head_dim 64 -> 72, a
width its kernels run at about 0.65x their head_dim-64 speed, docs/gauge.md); here `c_j` is one add per score
and `qe . ke` one more product of 16 columns. Called with `c=None` (the parameter-free form, unit variances),
`_key_constant` forms `c_j = -|k_j|^2 / 2` and `_bwd_dkv` adds its gradient `-dc_j k_j` to dk.

Design: FlashAttention-2 (Dao, 2023) as in Triton's fused-attention tutorial.
- `_fwd`: one program per (query block, batch x query head): online softmax over key blocks in base 2; the
  key blocks wholly below the causal diagonal skip the mask. Saves each row's log-sum-exp.
- `_delta`: `rowsum(dO * O)` per row.
- `_bwd_dkv`: one program per (key block, batch x key/value head), looping over the group's query heads and
  their query blocks (GQA without repeating k/v): dk, dv, dke, dc.
- `_bwd_dq`: one program per (query block, batch x query head): dq, dqe.
Rows that see no key output zeros: their log-sum-exp is +inf, so their probabilities are 0 in the backward.
Padded keys get zero gradients (every term of a key's gradient goes through its own probabilities).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ...kernels import device_guard, dot_precision
from ...kernels.launch import launch, launch_fitting
from ...kernels.tiles import unit_last_stride

LOG2E = math.log2(math.e)
EXTRA_WIDTH = 16  # the per-token-variance terms are zero-padded to this many columns (the smallest tl.dot K)
EW = tl.constexpr(EXTRA_WIDTH)

# (BM query rows, BN keys, num_warps, num_stages) per kernel, by (padded head_dim <= 64, 16-bit operands);
# `recipes/bench/bench_gauge.py --tune` times the alternatives on a GPU. The 16-bit entries were tuned on an H200
# at 16k tokens and 16 heads (head_dim 64 and 128), the fp32 one is a guess that fits Hopper's shared memory.
LAUNCH = {
    (True, True): dict(_fwd=(64, 128, 4, 3), _bwd_dkv=(64, 64, 4, 4), _bwd_dq=(64, 128, 4, 3)),
    (False, True): dict(_fwd=(128, 128, 8, 3), _bwd_dkv=(64, 128, 8, 3), _bwd_dq=(128, 64, 8, 3)),
    (True, False): dict(_fwd=(64, 32, 4, 2), _bwd_dkv=(32, 64, 4, 2), _bwd_dq=(64, 32, 4, 2)),
}


def operand_type(dtype: torch.dtype) -> str:
    """Operands of the products: the 16-bit input type itself, or "fp32" (at `dot_precision`). Triton's
    interpreter computes 16-bit `tl.dot` wrongly (3.6-3.9), so there 16-bit operands are rounded to their type
    and multiplied in fp32: the same exact products and fp32 sums."""
    name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    return name + "_rounded" if name != "fp32" and triton.knobs.runtime.interpret else name


@triton.jit
def _dot(a, b, acc, OP: tl.constexpr, PREC: tl.constexpr):
    """`acc + a @ b` in fp32 with operands as `operand_type` says; the sum is the product's own accumulator."""
    if OP == "bf16":
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif OP == "fp16":
        out = tl.dot(a.to(tl.float16), b.to(tl.float16), acc)
    elif OP == "bf16_rounded":
        out = tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), acc, input_precision="ieee")
    elif OP == "fp16_rounded":
        out = tl.dot(a.to(tl.float16).to(tl.float32), b.to(tl.float16).to(tl.float32), acc, input_precision="ieee")
    else:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision=PREC)
    return out


@triton.jit
def _rows(ptr, t, stride_t, d, T, D):
    """`(len(t), len(d))` tile of rows `t` in the stored dtype, zero outside `t < T`, `d < D`."""
    return tl.load(ptr + t[:, None] * stride_t + d[None, :], mask=(t[:, None] < T) & (d[None, :] < D), other=0.0)


@triton.jit
def _extra(ptr, t, e, T, E):
    """`(len(t), EP)` fp32 tile of a contiguous `(T, E)` per-token-variance term."""
    return tl.load(ptr + t[:, None] * E + e[None, :], mask=(t[:, None] < T) & (e[None, :] < E), other=0.0)


@triton.jit
def _key_range(first_row, BR: tl.constexpr, BN: tl.constexpr, Tk, q_offset, CAUSAL: tl.constexpr):
    """For query rows `[first_row, first_row + BR)`: the end of the key blocks every row sees whole (no mask
    needed) and the end of the keys any row sees."""
    if CAUSAL:
        full = tl.minimum((first_row + q_offset + 1) // BN * BN, Tk // BN * BN)
        end = tl.minimum(Tk, first_row + BR + q_offset)
    else:
        full = Tk // BN * BN
        end = Tk
    return full, end


@triton.jit
def _scores(a, b_t, ae, be_t, cols_bias, qk_scale, R: tl.constexpr, C: tl.constexpr, HAS_EXTRA: tl.constexpr,
            OP: tl.constexpr, PREC: tl.constexpr):
    """`(a . b + ae . be) * scale * log2(e) + bias` for `a (R, DP)`, `b_t (DP, C)`; `bias` (the key constant)
    comes pre-scaled, so the scaling is one fused multiply-add per score."""
    s = tl.zeros((R, C), dtype=tl.float32)
    if HAS_EXTRA:
        s = tl.dot(ae, be_t, s, input_precision="tf32x3")
    return _dot(a, b_t, s, OP, PREC) * qk_scale + cols_bias


@triton.jit
def _visible(rows, cols, Tk, q_offset, CAUSAL: tl.constexpr):
    """`(len(rows), len(cols))`: key `cols` exists and, if causal, is not after query `rows`."""
    ok = (cols < Tk)[None, :]
    if CAUSAL:
        ok = ok & (cols[None, :] <= rows[:, None] + q_offset)
    return ok


@triton.jit
def _fwd_block(q, qe, m_i, l_i, acc, k_base, v_base, ke_base, c_base, km_base, s_kt, s_vt, n0, rows, d, e,
               Tk, D, E, q_offset, qk_scale, BN: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr,
               HAS_EXTRA: tl.constexpr, HAS_KMASK: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr):
    """One key block of the online softmax."""
    n = n0 + tl.arange(0, BN)
    k = _rows(k_base, n, s_kt, d, Tk, D)
    ke = tl.zeros((BN, EW), dtype=tl.float32)
    if HAS_EXTRA:
        ke = _extra(ke_base, n, e, Tk, E)
    c = tl.load(c_base + n, mask=n < Tk, other=0.0)
    s = _scores(q, tl.trans(k), qe, tl.trans(ke), c[None, :], qk_scale, q.shape[0], BN, HAS_EXTRA, OP, PREC)
    if MASKED:
        s = tl.where(_visible(rows, n, Tk, q_offset, CAUSAL), s, float("-inf"))
    if HAS_KMASK:
        s = tl.where((tl.load(km_base + n, mask=n < Tk, other=0) != 0)[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing seen yet stays at 0
    p = tl.math.exp2(s - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    v = _rows(v_base, n, s_vt, d, Tk, D)
    return m_new, l_i * alpha + tl.sum(p, 1), _dot(p, v, acc * alpha[:, None], OP, PREC)


@triton.jit
def _query_block(q_ptr, k_ptr, v_ptr, qe_ptr, ke_ptr, c_ptr, km_ptr, Tq, Tk, HQ, HKV, G: tl.constexpr, D, E,
                 s_qb, s_qh, s_qt, s_kb, s_kh, s_kv_b, s_kv_h, DP: tl.constexpr, BM: tl.constexpr,
                 HAS_EXTRA: tl.constexpr):
    """Prologue of the per-(query block, batch x query head) kernels: ids, the block's rows, its q and qe tiles,
    and where its key/value head's k, v, ke, c and key mask start."""
    bhq = tl.program_id(1)
    b, hq = bhq // HQ, bhq % HQ
    bhk = b * HKV + hq // G
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    d, e = tl.arange(0, DP), tl.arange(0, EW)
    q = _rows(q_ptr + b * s_qb + hq * s_qh, rows, s_qt, d, Tq, D)
    qe = tl.zeros((BM, EW), dtype=tl.float32)
    if HAS_EXTRA:
        qe = _extra(qe_ptr + bhq * Tq * E, rows, e, Tq, E)
    k_base, v_base = k_ptr + b * s_kb + (hq // G) * s_kh, v_ptr + b * s_kv_b + (hq // G) * s_kv_h
    return (b, hq, bhq, rows, d, e, q, qe, k_base, v_base, ke_ptr + bhk * Tk * E, c_ptr + bhk * Tk,
            km_ptr + b * Tk)


@triton.jit
def _fwd(q_ptr, k_ptr, v_ptr, qe_ptr, ke_ptr, c_ptr, km_ptr, o_ptr, lse_ptr,
         Tq, Tk, HQ, HKV, G: tl.constexpr, q_offset, qk_scale, D, E,
         s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot,
         DP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, CAUSAL: tl.constexpr,
         HAS_EXTRA: tl.constexpr, HAS_KMASK: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr):
    b, hq, bhq, rows, d, e, q, qe, k_base, v_base, ke_base, c_base, km_base = _query_block(
        q_ptr, k_ptr, v_ptr, qe_ptr, ke_ptr, c_ptr, km_ptr, Tq, Tk, HQ, HKV, G, D, E, s_qb, s_qh, s_qt, s_kb, s_kh,
        s_vb, s_vh, DP, BM, HAS_EXTRA)
    m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BM,), dtype=tl.float32)
    acc = tl.zeros((BM, DP), dtype=tl.float32)
    full, end = _key_range(tl.program_id(0) * BM, BM, BN, Tk, q_offset, CAUSAL)
    for n0 in range(0, full, BN):
        m_i, l_i, acc = _fwd_block(q, qe, m_i, l_i, acc, k_base, v_base, ke_base, c_base, km_base, s_kt, s_vt, n0,
                                   rows, d, e, Tk, D, E, q_offset, qk_scale, BN, CAUSAL, False, HAS_EXTRA,
                                   HAS_KMASK, OP, PREC)
    for n0 in range(full, end, BN):
        m_i, l_i, acc = _fwd_block(q, qe, m_i, l_i, acc, k_base, v_base, ke_base, c_base, km_base, s_kt, s_vt, n0,
                                   rows, d, e, Tk, D, E, q_offset, qk_scale, BN, CAUSAL, True, HAS_EXTRA,
                                   HAS_KMASK, OP, PREC)
    seen = l_i > 0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    ok = rows < Tq
    o = o_ptr + b * s_ob + hq * s_oh + rows[:, None] * s_ot + d[None, :]
    tl.store(o, out.to(o_ptr.dtype.element_ty), mask=ok[:, None] & (d[None, :] < D))
    lse = tl.where(seen, m_i + tl.math.log2(tl.where(seen, l_i, 1.0)), float("inf"))
    tl.store(lse_ptr + bhq * Tq + rows, lse, mask=ok)


@triton.jit
def _key_constant(k_ptr, c_ptr, Tk, HKV, D, s_kb, s_kh, s_kt, c_scale, DP: tl.constexpr, BT: tl.constexpr):
    """`c_j = -|k_j|^2 / 2` in fp32, pre-scaled like a given constant: one launch where torch takes four ops."""
    bhk = tl.program_id(1)
    n = tl.program_id(0) * BT + tl.arange(0, BT)
    k = _rows(k_ptr + (bhk // HKV) * s_kb + (bhk % HKV) * s_kh, n, s_kt, tl.arange(0, DP), Tk, D).to(tl.float32)
    tl.store(c_ptr + bhk * Tk + n, -0.5 * c_scale * tl.sum(k * k, 1), mask=n < Tk)


@triton.jit
def _delta(o_ptr, do_ptr, delta_ptr, Tq, HQ, D, s_ob, s_oh, s_ot, s_db, s_dh, s_dt, DP: tl.constexpr, BM: tl.constexpr):
    bhq = tl.program_id(1)
    b, hq = bhq // HQ, bhq % HQ
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    d = tl.arange(0, DP)
    o = _rows(o_ptr + b * s_ob + hq * s_oh, rows, s_ot, d, Tq, D).to(tl.float32)
    do = _rows(do_ptr + b * s_db + hq * s_dh, rows, s_dt, d, Tq, D).to(tl.float32)
    tl.store(delta_ptr + bhq * Tq + rows, tl.sum(o * do, 1), mask=rows < Tq)


@triton.jit
def _dkv_block(k, v, ke, c, dk, dv, dke, dc, q_base, do_base, qe_base, lse_base, delta_base, s_qt, s_dt, m0, n, d, e,
               Tq, Tk, D, E, q_offset, qk_scale, BM: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr,
               HAS_EXTRA: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr):
    """One query block's contribution to a key block's gradients (all transposed: keys are rows)."""
    m = m0 + tl.arange(0, BM)
    q = _rows(q_base, m, s_qt, d, Tq, D)
    do = _rows(do_base, m, s_dt, d, Tq, D)
    qe = tl.zeros((BM, EW), dtype=tl.float32)
    if HAS_EXTRA:
        qe = _extra(qe_base, m, e, Tq, E)
    lse = tl.load(lse_base + m, mask=m < Tq, other=float("inf"))  # rows past Tq get no probability
    delta = tl.load(delta_base + m, mask=m < Tq, other=0.0)
    p_t = tl.math.exp2(_scores(k, tl.trans(q), ke, tl.trans(qe), c[:, None], qk_scale, k.shape[0], BM, HAS_EXTRA,
                               OP, PREC) - lse[None, :])
    if MASKED:
        p_t = tl.where(n[:, None] <= m[None, :] + q_offset, p_t, 0.0)
    dv = _dot(p_t, do, dv, OP, PREC)
    ds_t = p_t * (_dot(v, tl.trans(do), tl.zeros(p_t.shape, dtype=tl.float32), OP, PREC) - delta[None, :])
    dk = _dot(ds_t, q, dk, OP, PREC)
    if HAS_EXTRA:
        dke = tl.dot(ds_t, qe, dke, input_precision="tf32x3")
    return dk, dv, dke, dc + tl.sum(ds_t, 1)


@triton.jit
def _bwd_dkv(q_ptr, k_ptr, v_ptr, qe_ptr, ke_ptr, c_ptr, km_ptr, do_ptr, lse_ptr, delta_ptr,
             dk_ptr, dv_ptr, dke_ptr, dc_ptr, Tq, Tk, HQ, HKV, G: tl.constexpr, q_offset, qk_scale, sm_scale, D, E,
             s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_db, s_dh, s_dt,
             DP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, CAUSAL: tl.constexpr,
             HAS_EXTRA: tl.constexpr, HAS_KMASK: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr,
             KEY_NORM: tl.constexpr):
    bhk = tl.program_id(1)
    b, h = bhk // HKV, bhk % HKV
    n0 = tl.program_id(0) * BN
    n = n0 + tl.arange(0, BN)
    d, e = tl.arange(0, DP), tl.arange(0, EW)
    k = _rows(k_ptr + b * s_kb + h * s_kh, n, s_kt, d, Tk, D)
    v = _rows(v_ptr + b * s_vb + h * s_vh, n, s_vt, d, Tk, D)
    ke = tl.zeros((BN, EW), dtype=tl.float32)
    if HAS_EXTRA:
        ke = _extra(ke_ptr + bhk * Tk * E, n, e, Tk, E)
    c = tl.load(c_ptr + bhk * Tk + n, mask=n < Tk, other=0.0)
    dk = tl.zeros((BN, DP), dtype=tl.float32)
    dv = tl.zeros((BN, DP), dtype=tl.float32)
    dke = tl.zeros((BN, EW), dtype=tl.float32)
    dc = tl.zeros((BN,), dtype=tl.float32)
    if CAUSAL:  # query blocks from `lo` see part of this key block, from `full` all of it
        lo = tl.maximum(n0 - q_offset, 0) // BM * BM
        full = tl.minimum(tl.cdiv(tl.maximum(n0 + BN - 1 - q_offset, 0), BM) * BM, tl.cdiv(Tq, BM) * BM)
    else:
        lo, full = 0, 0
    for g in range(G):
        bhq = b * HQ + h * G + g
        q_base, do_base = q_ptr + b * s_qb + (h * G + g) * s_qh, do_ptr + b * s_db + (h * G + g) * s_dh
        qe_base, lse_base, delta_base = qe_ptr + bhq * Tq * E, lse_ptr + bhq * Tq, delta_ptr + bhq * Tq
        for m0 in range(lo, full, BM):
            dk, dv, dke, dc = _dkv_block(k, v, ke, c, dk, dv, dke, dc, q_base, do_base, qe_base, lse_base, delta_base,
                                         s_qt, s_dt, m0, n, d, e, Tq, Tk, D, E, q_offset, qk_scale, BM, CAUSAL, True,
                                         HAS_EXTRA, OP, PREC)
        for m0 in range(full, Tq, BM):
            dk, dv, dke, dc = _dkv_block(k, v, ke, c, dk, dv, dke, dc, q_base, do_base, qe_base, lse_base, delta_base,
                                         s_qt, s_dt, m0, n, d, e, Tq, Tk, D, E, q_offset, qk_scale, BM, CAUSAL, False,
                                         HAS_EXTRA, OP, PREC)
    live = n < Tk
    if HAS_KMASK:
        live = live & (tl.load(km_ptr + b * Tk + n, mask=n < Tk, other=0) != 0)
    tile = bhk * Tk * D + n[:, None] * D + d[None, :]
    ok = live[:, None] & (d[None, :] < D)
    store = (n < Tk)[:, None] & (d[None, :] < D)
    dk = dk * sm_scale
    if KEY_NORM:  # c_j = -|k_j|^2 / 2 was formed here, so its gradient -dc_j k_j joins dk here
        dk -= (dc * sm_scale)[:, None] * k.to(tl.float32)
    tl.store(dk_ptr + tile, tl.where(ok, dk, 0.0).to(dk_ptr.dtype.element_ty), mask=store)
    tl.store(dv_ptr + tile, tl.where(ok, dv, 0.0).to(dv_ptr.dtype.element_ty), mask=store)
    tl.store(dc_ptr + bhk * Tk + n, tl.where(live, dc * sm_scale, 0.0), mask=n < Tk)
    if HAS_EXTRA:
        extra = dke_ptr + bhk * Tk * E + n[:, None] * E + e[None, :]
        tl.store(extra, tl.where(live[:, None], dke * sm_scale, 0.0), mask=(n < Tk)[:, None] & (e[None, :] < E))


@triton.jit
def _dq_block(q, do, qe, lse, delta, dq, dqe, k_base, v_base, ke_base, c_base, km_base, s_kt, s_vt, n0, rows, d, e,
              Tk, D, E, q_offset, qk_scale, BN: tl.constexpr, CAUSAL: tl.constexpr, MASKED: tl.constexpr,
              HAS_EXTRA: tl.constexpr, HAS_KMASK: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr):
    """One key block's contribution to a query block's gradients."""
    n = n0 + tl.arange(0, BN)
    k = _rows(k_base, n, s_kt, d, Tk, D)
    v = _rows(v_base, n, s_vt, d, Tk, D)
    ke = tl.zeros((BN, EW), dtype=tl.float32)
    if HAS_EXTRA:
        ke = _extra(ke_base, n, e, Tk, E)
    c = tl.load(c_base + n, mask=n < Tk, other=0.0)
    p = tl.math.exp2(_scores(q, tl.trans(k), qe, tl.trans(ke), c[None, :], qk_scale, q.shape[0], BN, HAS_EXTRA,
                             OP, PREC) - lse[:, None])
    if MASKED:
        p = tl.where(_visible(rows, n, Tk, q_offset, CAUSAL), p, 0.0)
    if HAS_KMASK:
        p = tl.where((tl.load(km_base + n, mask=n < Tk, other=0) != 0)[None, :], p, 0.0)
    ds = p * (_dot(do, tl.trans(v), tl.zeros(p.shape, dtype=tl.float32), OP, PREC) - delta[:, None])
    dq = _dot(ds, k, dq, OP, PREC)
    if HAS_EXTRA:
        dqe = tl.dot(ds, ke, dqe, input_precision="tf32x3")
    return dq, dqe


@triton.jit
def _bwd_dq(q_ptr, k_ptr, v_ptr, qe_ptr, ke_ptr, c_ptr, km_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, dqe_ptr,
            Tq, Tk, HQ, HKV, G: tl.constexpr, q_offset, qk_scale, sm_scale, D, E,
            s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_db, s_dh, s_dt,
            DP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, CAUSAL: tl.constexpr,
            HAS_EXTRA: tl.constexpr, HAS_KMASK: tl.constexpr, OP: tl.constexpr, PREC: tl.constexpr):
    b, hq, bhq, rows, d, e, q, qe, k_base, v_base, ke_base, c_base, km_base = _query_block(
        q_ptr, k_ptr, v_ptr, qe_ptr, ke_ptr, c_ptr, km_ptr, Tq, Tk, HQ, HKV, G, D, E, s_qb, s_qh, s_qt, s_kb, s_kh,
        s_vb, s_vh, DP, BM, HAS_EXTRA)
    do = _rows(do_ptr + b * s_db + hq * s_dh, rows, s_dt, d, Tq, D)
    lse = tl.load(lse_ptr + bhq * Tq + rows, mask=rows < Tq, other=float("inf"))
    delta = tl.load(delta_ptr + bhq * Tq + rows, mask=rows < Tq, other=0.0)
    dq = tl.zeros((BM, DP), dtype=tl.float32)
    dqe = tl.zeros((BM, EW), dtype=tl.float32)
    full, end = _key_range(tl.program_id(0) * BM, BM, BN, Tk, q_offset, CAUSAL)
    for n0 in range(0, full, BN):
        dq, dqe = _dq_block(q, do, qe, lse, delta, dq, dqe, k_base, v_base, ke_base, c_base, km_base, s_kt, s_vt, n0,
                            rows, d, e, Tk, D, E, q_offset, qk_scale, BN, CAUSAL, False, HAS_EXTRA, HAS_KMASK, OP, PREC)
    for n0 in range(full, end, BN):
        dq, dqe = _dq_block(q, do, qe, lse, delta, dq, dqe, k_base, v_base, ke_base, c_base, km_base, s_kt, s_vt, n0,
                            rows, d, e, Tk, D, E, q_offset, qk_scale, BN, CAUSAL, True, HAS_EXTRA, HAS_KMASK, OP, PREC)
    ok = rows < Tq
    tl.store(dq_ptr + bhq * Tq * D + rows[:, None] * D + d[None, :], (dq * sm_scale).to(dq_ptr.dtype.element_ty),
             mask=ok[:, None] & (d[None, :] < D))
    if HAS_EXTRA:
        tl.store(dqe_ptr + bhq * Tq * E + rows[:, None] * E + e[None, :], dqe * sm_scale,
                 mask=ok[:, None] & (e[None, :] < E))


def padded_dim(head_dim: int) -> int:
    """The head_dim the kernels compute at: the next power of two, at least 16."""
    return triton.next_power_of_2(max(head_dim, 16))


def launch_key(head_dim: int, dtype: torch.dtype) -> tuple[bool, bool]:
    """The `LAUNCH` entry for these inputs: (padded head_dim <= 64, 16-bit operands)."""
    return padded_dim(head_dim) <= 64, operand_type(dtype) != "fp32"


def _launch(name: str, kernel, grid, q: torch.Tensor, consts: dict, *args) -> None:
    """Launch `kernel` (`grid(meta)`) with `LAUNCH`'s setting for inputs like `q`, stepped down where the GPU lacks
    the shared memory (`launch_fitting`: the learned form's extra tiles at head_dim 128 need more than Hopper's
    227 KB at the tuned setting)."""
    setting = LAUNCH[launch_key(q.shape[-1], q.dtype)][name]
    launch_fitting(name, kernel, grid, setting, ("BM", "BN"), consts, *args)


def _bthd_strides(x: torch.Tensor) -> tuple[int, int, int]:
    """(batch, head, time) strides of a `(B, T, H, D)` tensor (the output layout transformers expects)."""
    return (x.stride(0), x.stride(2), x.stride(1))


class _GaugeFlash(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, qe, ke, c, key_mask, scale, causal):
        q, k, v = unit_last_stride(q), unit_last_stride(k), unit_last_stride(v)
        b, hq, tq, d = q.shape
        hkv, tk = k.shape[1], k.shape[2]
        has_extra = qe is not None
        e = qe.shape[-1] if has_extra else 0
        dp = padded_dim(d)
        if c is None:  # the parameter-free form's constant, formed by one kernel
            c = torch.empty(b, hkv, tk, device=q.device, dtype=torch.float32)
            launch(_key_constant, (triton.cdiv(tk, 64), b * hkv), k, c, tk, hkv, d, *k.stride()[:3], scale * LOG2E,
                   DP=dp, BT=64, num_warps=4, num_stages=3)
            ctx.key_norm = True
        else:
            c = (c.float() * (scale * LOG2E)).contiguous()  # pre-scaled: one fused multiply-add per score
            ctx.key_norm = False
        if has_extra:
            qe, ke = qe.float().contiguous(), ke.float().contiguous()
        km = key_mask.to(torch.int8).contiguous() if key_mask is not None else c  # unread without HAS_KMASK
        consts = dict(DP=dp, CAUSAL=causal, HAS_EXTRA=has_extra, HAS_KMASK=key_mask is not None,
                      OP=operand_type(q.dtype), PREC=dot_precision(q.dtype))
        o = torch.empty(b, tq, hq, d, device=q.device, dtype=q.dtype)
        lse = torch.empty(b, hq, tq, device=q.device, dtype=torch.float32)
        q_offset = tk - tq if causal else 0
        _launch("_fwd", _fwd, lambda meta: (triton.cdiv(tq, meta["BM"]), b * hq), q, consts,
                q, k, v, qe if has_extra else c, ke if has_extra else c, c, km, o, lse,
                tq, tk, hq, hkv, hq // hkv, q_offset, scale * LOG2E, d, e,
                *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *_bthd_strides(o))
        ctx.save_for_backward(q, k, v, qe, ke, c, km, o, lse)
        ctx.scale, ctx.consts, ctx.q_offset = scale, consts, q_offset
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, qe, ke, c, km, o, lse = ctx.saved_tensors
        do = unit_last_stride(do)
        b, hq, tq, d = q.shape
        hkv, tk = k.shape[1], k.shape[2]
        consts, has_extra = ctx.consts, ctx.consts["HAS_EXTRA"]
        e = qe.shape[-1] if has_extra else 0
        dp = consts["DP"]
        delta = torch.empty_like(lse)
        launch(_delta, (triton.cdiv(tq, 64), b * hq), o, do, delta, tq, hq, d, *_bthd_strides(o), *_bthd_strides(do),
               DP=dp, BM=64, num_warps=4, num_stages=3)
        dq = torch.empty(b, hq, tq, d, device=q.device, dtype=q.dtype)
        dk = torch.empty(b, hkv, tk, d, device=q.device, dtype=k.dtype)
        dv = torch.empty(b, hkv, tk, d, device=q.device, dtype=v.dtype)
        dc = torch.empty(b, hkv, tk, device=q.device, dtype=torch.float32)
        dqe = torch.empty_like(qe) if has_extra else None
        dke = torch.empty_like(ke) if has_extra else None
        common = (tq, tk, hq, hkv, hq // hkv, ctx.q_offset, ctx.scale * LOG2E, ctx.scale, d, e,
                  *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *_bthd_strides(do))
        extra_in = (qe, ke) if has_extra else (c, c)
        _launch("_bwd_dkv", _bwd_dkv, lambda meta: (triton.cdiv(tk, meta["BN"]), b * hkv), q,
                {**consts, "KEY_NORM": ctx.key_norm},
                q, k, v, *extra_in, c, km, do, lse, delta, dk, dv, dke if has_extra else dc, dc, *common)
        _launch("_bwd_dq", _bwd_dq, lambda meta: (triton.cdiv(tq, meta["BM"]), b * hq), q, consts,
                q, k, v, *extra_in, c, km, do, lse, delta, dq, dqe if has_extra else dc, *common)
        return dq, dk, dv, dqe, dke, None if ctx.key_norm else dc, None, None, None


@device_guard
def gauge_flash(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    c: torch.Tensor | None,
    scale: float,
    causal: bool = True,
    key_mask: torch.Tensor | None = None,
    extra: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """`softmax_j(scale * (q_i . k_j + qe_i . ke_j + c_j)) v_j` in one fused kernel, forward and backward.

    q `(B, Hq, Tq, D)`, k/v `(B, Hkv, Tk, D)` (any strides with a unit last stride; fp32 only for D <= 64),
    `c (B, Hkv, Tk)` the key constant (computed in fp32), or None for the parameter-free form's `-|k_j|^2 / 2`
    (formed and differentiated inside the kernels), `key_mask (B, Tk)` bool (True = real key),
    `extra = (qe (B, Hq, Tq, E), ke (B, Hkv, Tk, E))` with E <= 16 (fp32). Causal calls place the queries at
    the last Tq key positions. Returns `(B, Tq, Hq, D)` in q's dtype; every input but the mask gets a gradient.
    """
    d, e = q.shape[-1], extra[0].shape[-1] if extra is not None else 0
    if d > 128 or v.shape[-1] != d or e > EXTRA_WIDTH:
        raise ValueError(f"gauge kernel needs head_dim <= 128 shared by q/k/v and <= {EXTRA_WIDTH} extra terms; "
                         f"got q {d}, v {v.shape[-1]}, extra {e}.")
    qe, ke = extra if extra is not None else (None, None)
    return _GaugeFlash.apply(q, k, v, qe, ke, c, key_mask, float(scale), bool(causal))
