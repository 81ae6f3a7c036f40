"""Causal Performer (FAVOR+) attention as Triton kernels: forward, backward, and a carried recurrent state.

Math (`features.py` and `attention.py` beside this module are the reference): features `phi(x) = exp(x' W^T - |x'|^2/2 - c)/sqrt(m)`
with `x' = x * scaling^(1/2)`, `c` the row maximum of `x' W^T - |x'|^2/2` for queries (it cancels in the ratio)
and the constant `max_i |W_i|^2 / 4` for keys (`key_stabiliser`);
`o_t = phi(q_t) S_t / phi(q_t) z_t` with `S_t = S_0 + sum_{s<=t} phi(k_s) v_s^T` and `z_t` its row sums.

Design (chunked, fla's layout): chunks of `C` tokens, feature blocks of `BM` columns (per kernel: `LAUNCH`).
- `_fwd_state`: each (chunk, feature block) writes `phi(K_c)^T [V_c, 1]`; `scan.scan_blocks_` (in place,
  fp32 sums) turns them into each chunk's starting state (and the fp32 final state for decoding). The
  chunk states are stored in the products' operand type (bf16 for bf16 inputs: `operand_type`), which
  halves the traffic of the scan and of every kernel that reads them.
- `_fwd`: per (chunk, query head): inter-chunk `phi(q) S`, intra-chunk dense `tril(phi(q) phi(k)^T) v`;
  the features are computed in registers and never written out, the query stabiliser is an online row
  maximum. Saves the row maxima and denominators.
- Backward with `g_num = dO / den`, `g_den = -rowsum(dO * O) / den` (the row sum formed by `_bwd_state`):
  `_bwd_state` (reverse states `phi(Q)^T [g_num, g_den]`), a reverse `scan_blocks_`, `_bwd_dq` per query
  head and `_bwd_dkv` per key/value head (loops over its query heads: GQA without repeating k/v).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ...kernels import device_guard, dot_precision
from ...kernels.launch import launch_fitting
from ...kernels.scan import scan_blocks_
from ...kernels.tiles import load_rows, unit_last_stride
from .features import KEY_FLOOR as KEY_FLOOR_VALUE, key_stabiliser

FEATURE_TILE = 64  # the chunk states' rows are padded to a multiple of this; each kernel's BM divides it

# Tokens per chunk `C`, and (feature block BM, num_warps, num_stages) per kernel, by (padded head_dim <= 64,
# 16-bit inputs). `C` is shared by all kernels (the chunk states); a setting that needs more shared
# memory than the GPU has steps down (`launch_fitting`). The bf16 entries are the fastest per kernel on an H200
# at 32k tokens (16 query heads x 128 / 32 x 64, 4 per key/value head; `recipes/bench/tune_performer.py`). fp32
# inputs take 32-token chunks: their tf32x3 dots keep high and low operand parts (290-300 KB of shared memory at
# 64 tokens and head_dim 64 on the H100). A 32-feature block with 64-token chunks hit illegal memory accesses
# (Triton 3.6, H200), so the bf16 entries keep BM 64.
LAUNCH = {
    (True, True): dict(C=64, _fwd_state=(64, 4, 3), _fwd=(64, 4, 2), _bwd_state=(64, 4, 3), _bwd_dq=(64, 4, 3),
                       _bwd_dkv=(64, 4, 1)),
    (False, True): dict(C=64, _fwd_state=(64, 4, 2), _fwd=(64, 4, 1), _bwd_state=(64, 4, 2), _bwd_dq=(64, 4, 1),
                        _bwd_dkv=(64, 8, 1)),
    (True, False): dict(C=32, _fwd_state=(64, 4, 3), _fwd=(64, 8, 3), _bwd_state=(64, 4, 3), _bwd_dq=(64, 8, 3),
                        _bwd_dkv=(64, 8, 3)),
    (False, False): dict(C=32, _fwd_state=(64, 4, 3), _fwd=(64, 8, 3), _bwd_state=(64, 4, 3), _bwd_dq=(64, 8, 3),
                         _bwd_dkv=(64, 8, 3)),
}


def launch_key(padded_head_dim: int, dtype: torch.dtype) -> tuple[bool, bool]:
    """The `LAUNCH` entry for these inputs: (padded head_dim <= 64, 16-bit inputs)."""
    return padded_head_dim <= 64, dtype != torch.float32


def _launch(name: str, kernel, grid, settings: dict, consts: dict, *args):
    """Launch `kernel` at `settings[name]` (`launch_fitting`); `grid` may be a function of the launch's `BM`."""
    return launch_fitting(name, kernel, grid, settings[name], ("BM",), consts, *args)


def operand_type(dtype: torch.dtype, padded_head_dim: int) -> str:
    """Operands of the kernels' products of features, states and gradients: "bf16" for bf16 inputs (twice
    the tensor-core rate of tf32 and half the shared-memory traffic, at the precision of the bf16 output and
    with fp32's range, which small key features need), "fp32" (at `dot_precision`) otherwise; fp16's range
    would flush small features to zero. The projections that feed `exp` always use fp32 operands (`_logits`).
    Triton's interpreter computes bf16 `tl.dot` wrongly (3.6 and 3.9), so there "bf16_rounded" rounds the
    operands to bf16 and multiplies in fp32: the same exact products and fp32 sums. Head_dim 32 keeps fp32
    operands: with bf16 tiles 32 wide, two of three H100 runs of the head_dim-32 test case hit an illegal memory
    access (Triton 3.6; triton-lang/triton#10486 and #11366 report the same for multi-dot Hopper kernels
    with 32-wide blocks)."""
    if dtype != torch.bfloat16 or padded_head_dim < 64:
        return "fp32"
    return "bf16_rounded" if triton.knobs.runtime.interpret else "bf16"


TINY = tl.constexpr(1.1754944e-38)  # float32 tiny, the clamp the PyTorch path uses
KEY_FLOOR = tl.constexpr(KEY_FLOOR_VALUE)
FLOOR_FEATURE = tl.constexpr(math.exp(KEY_FLOOR_VALUE) * (1 + 1e-6))  # a floored key's feature x sqrt(m), rounded up


@triton.jit
def _mm(a, b, OP: tl.constexpr, PREC: tl.constexpr):
    """`a @ b` with fp32 result and operands as `operand_type` says. One return: Triton still compiles (and
    type-checks) the code after a static branch's early return."""
    if OP == "bf16":
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif OP == "bf16_rounded":
        out = tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a, b, input_precision=PREC)
    return out


@triton.jit
def _logits(x, w, half_sq, PREC: tl.constexpr):
    """`x' W^T - |x'|^2/2` of a `(C, DP)` tile against a `(BM, DP)` feature block -> `(C, BM)`, always fp32
    operands: an error of e in a logit is a relative error of e in its feature, so bf16 operands (e ~ 0.1
    at |x'||W| ~ 50) would be too coarse."""
    return tl.dot(x, tl.trans(w), input_precision=PREC) - half_sq[:, None]


@triton.jit
def _phi(logits, stab, col_ok, inv_sqrt_m):
    """Features from their logits and stabiliser; dead columns are 0."""
    return tl.where(col_ok, tl.exp(logits - stab) * inv_sqrt_m, 0.0)


@triton.jit
def _feat(x, w, half_sq, stab, col_ok, inv_sqrt_m, PREC: tl.constexpr):
    """`phi` of a `(C, DP)` tile against a `(BM, DP)` block of features -> `(C, BM)`."""
    return _phi(_logits(x, w, half_sq, PREC), stab, col_ok, inv_sqrt_m)


@triton.jit
def _key_feat(x, w, half_sq, stab, col_ok, inv_sqrt_m, PREC: tl.constexpr):
    """Key features: `_feat` with the log-features floored at `KEY_FLOOR` below the stabiliser (`features.py`)."""
    return tl.where(col_ok, tl.exp(tl.maximum(_logits(x, w, half_sq, PREC) - stab, KEY_FLOOR)) * inv_sqrt_m, 0.0)


@triton.jit
def _key_slope(kf, inv_sqrt_m):
    """`d kf / d logit` of key features: `kf` itself, 0 where the floor holds it."""
    return tl.where(kf > FLOOR_FEATURE * inv_sqrt_m, kf, 0.0)


@triton.jit
def _load_w(w_ptr, mb, d, M, D, BM: tl.constexpr):
    j = mb * BM + tl.arange(0, BM)
    return tl.load(w_ptr + j[:, None] * D + d[None, :], mask=(j[:, None] < M) & (d[None, :] < D), other=0.0), j


@triton.jit
def _key_features(k_ptr, v_ptr, mask_ptr, b, h, t, d, T, D, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, scale,
                  HAS_MASK: tl.constexpr):
    k = load_rows(k_ptr + b * s_kb + h * s_kh, t, s_kt, d, T, D) * scale
    v = load_rows(v_ptr + b * s_vb + h * s_vh, t, s_vt, d, T, D)
    if HAS_MASK:
        m = tl.load(mask_ptr + b * T + t, mask=t < T, other=0.0)
    else:
        m = tl.where(t < T, 1.0, 0.0)
    return k, 0.5 * tl.sum(k * k, 1), v, m


@triton.jit
def _fwd_state(k_ptr, v_ptr, mask_ptr, w_ptr, st_ptr, zt_ptr,
               T, D, M, HKV, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, NC, scale, kstab, inv_sqrt_m,
               DP: tl.constexpr, MP: tl.constexpr, BM: tl.constexpr, C: tl.constexpr,
               HAS_MASK: tl.constexpr, PREC: tl.constexpr, OP: tl.constexpr):
    c, mb, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // HKV, bh % HKV
    t = c * C + tl.arange(0, C)
    d = tl.arange(0, DP)
    k, k_sq, v, m = _key_features(k_ptr, v_ptr, mask_ptr, b, h, t, d, T, D, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt,
                                  scale, HAS_MASK)
    w, j = _load_w(w_ptr, mb, d, M, D, BM)
    kf = _key_feat(k, w, k_sq, kstab, (j < M)[None, :], inv_sqrt_m, PREC) * m[:, None]
    base = (bh * NC + c) * MP + j
    tl.store(st_ptr + base[:, None] * DP + d[None, :], _mm(tl.trans(kf), v, OP, PREC).to(st_ptr.dtype.element_ty))
    tl.store(zt_ptr + base, tl.sum(kf, 0))


@triton.jit
def _chunk_state(st_ptr, zt_ptr, mb, j, d, bh, NC, c, DP: tl.constexpr, MP: tl.constexpr):
    """The chunk's starting state rows `S`, `z` for feature block `mb` (columns `j`)."""
    base = (bh * NC + c) * MP + j
    return tl.load(st_ptr + base[:, None] * DP + d[None, :]), tl.load(zt_ptr + base)


@triton.jit
def _query_block(HQ, G: tl.constexpr, C: tl.constexpr, DP: tl.constexpr):
    """Ids of a per-query-head program, grid `(chunk, batch * query head)`: chunk, row, batch, query head, its
    key/value head, that head's row, the chunk's tokens and the feature columns."""
    c, bhq = tl.program_id(0), tl.program_id(1)
    b, hq = bhq // HQ, bhq % HQ
    h = hq // G
    return c, bhq, b, hq, h, b * (HQ // G) + h, c * C + tl.arange(0, C), tl.arange(0, DP)


@triton.jit
def _fwd(q_ptr, k_ptr, v_ptr, mask_ptr, w_ptr, st_ptr, zt_ptr, o_ptr, den_ptr, qmax_ptr,
         T, D, M, HQ, G: tl.constexpr, s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot,
         NC, scale, kstab, inv_sqrt_m,
         DP: tl.constexpr, MP: tl.constexpr, BM: tl.constexpr, C: tl.constexpr,
         HAS_MASK: tl.constexpr, PREC: tl.constexpr, OP: tl.constexpr):
    """Query stabiliser by online maximum (flash attention's rescaling): the sums so far are multiplied by
    `exp(old max - new max)` when a feature block raises a row's maximum, so the projections are formed once."""
    c, bhq, b, hq, h, bh, t, d = _query_block(HQ, G, C, DP)
    q = load_rows(q_ptr + b * s_qb + hq * s_qh, t, s_qt, d, T, D) * scale
    q_sq = 0.5 * tl.sum(q * q, 1)
    k, k_sq, v, m = _key_features(k_ptr, v_ptr, mask_ptr, b, h, t, d, T, D, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt,
                                  scale, HAS_MASK)
    qmax = tl.full((C,), float("-inf"), tl.float32)
    num = tl.zeros((C, DP), tl.float32)
    den = tl.zeros((C,), tl.float32)
    a = tl.zeros((C, C), tl.float32)
    for mb in range(MP // BM):
        w, j = _load_w(w_ptr, mb, d, M, D, BM)
        ok = (j < M)[None, :]
        lq = _logits(q, w, q_sq, PREC)
        new = tl.maximum(qmax, tl.max(tl.where(ok, lq, float("-inf")), 1))
        rescale = tl.exp(qmax - new)
        qmax = new
        qf = _phi(lq, new[:, None], ok, inv_sqrt_m)
        kf = _key_feat(k, w, k_sq, kstab, ok, inv_sqrt_m, PREC) * m[:, None]
        s, z = _chunk_state(st_ptr, zt_ptr, mb, j, d, bh, NC, c, DP, MP)
        num = num * rescale[:, None] + _mm(qf, s, OP, PREC)
        den = den * rescale + tl.sum(qf * z[None, :], 1)
        a = a * rescale[:, None] + _mm(qf, tl.trans(kf), OP, PREC)
    i = tl.arange(0, C)
    a = tl.where(i[:, None] >= i[None, :], a, 0.0)
    num += _mm(a, v, OP, PREC)
    den += tl.sum(a, 1)
    out = num / tl.maximum(den, TINY)[:, None]
    tl.store(o_ptr + b * s_ob + hq * s_oh + t[:, None] * s_ot + d[None, :], out.to(o_ptr.dtype.element_ty),
             mask=(t[:, None] < T) & (d[None, :] < D))
    tl.store(den_ptr + bhq * T + t, den, mask=t < T)
    tl.store(qmax_ptr + bhq * T + t, qmax, mask=t < T)


@triton.jit
def _query_grads(q_ptr, do_ptr, den_ptr, o_ptr, delta_ptr, qmax_ptr, b, hq, HQ, t, d, T, D, s_qb, s_qh, s_qt,
                 s_ob, s_oh, s_ot, scale, FROM_O: tl.constexpr, store_delta):
    """Scaled queries, their halves-of-squares and row maxima, `g_num = dO/den`, `g_den = -delta/den` with
    `delta = rowsum(dO * O)`. `_bwd_state` (FROM_O) forms delta from `o`, the forward's `(B, T, HQ, D)` output,
    and stores it where `store_delta`; the later kernels load the vector instead of an O tile per feature
    block (and no torch ops per call compute it)."""
    q = load_rows(q_ptr + b * s_qb + hq * s_qh, t, s_qt, d, T, D) * scale
    row = (b * HQ + hq) * T + t
    den = tl.load(den_ptr + row, mask=t < T, other=1.0)
    qmax = tl.load(qmax_ptr + row, mask=t < T, other=0.0)
    inv = tl.where(den > 0, 1.0 / tl.maximum(den, TINY), 0.0)  # a query that sees no key has no gradient
    do = load_rows(do_ptr + b * s_ob + hq * s_oh, t, s_ot, d, T, D)
    if FROM_O:
        delta = tl.sum(do * load_rows(o_ptr + (b * T * HQ + hq) * D, t, HQ * D, d, T, D), 1)
        if store_delta:
            tl.store(delta_ptr + row, delta, mask=t < T)
    else:
        delta = tl.load(delta_ptr + row, mask=t < T, other=0.0)
    return q, 0.5 * tl.sum(q * q, 1), qmax, do * inv[:, None], -delta * inv


@triton.jit
def _bwd_state(q_ptr, do_ptr, den_ptr, o_ptr, delta_ptr, qmax_ptr, w_ptr, rt_ptr, rzt_ptr,
               T, D, M, HKV, G: tl.constexpr, s_qb, s_qh, s_qt, s_ob, s_oh, s_ot, NC, scale, inv_sqrt_m,
               DP: tl.constexpr, MP: tl.constexpr, BM: tl.constexpr, C: tl.constexpr, PREC: tl.constexpr,
               OP: tl.constexpr):
    c, mb, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // HKV, bh % HKV
    t = c * C + tl.arange(0, C)
    d = tl.arange(0, DP)
    w, j = _load_w(w_ptr, mb, d, M, D, BM)
    ok = (j < M)[None, :]
    r = tl.zeros((BM, DP), tl.float32)
    rz = tl.zeros((BM,), tl.float32)
    for g in range(G):
        q, q_sq, qmax, gn, gd = _query_grads(q_ptr, do_ptr, den_ptr, o_ptr, delta_ptr, qmax_ptr, b, h * G + g,
                                             HKV * G, t, d, T, D, s_qb, s_qh, s_qt, s_ob, s_oh, s_ot, scale,
                                             True, mb == 0)
        qf = _feat(q, w, q_sq, qmax[:, None], ok, inv_sqrt_m, PREC)
        r += _mm(tl.trans(qf), gn, OP, PREC)
        rz += tl.sum(qf * gd[:, None], 0)
    base = (bh * NC + c) * MP + j
    tl.store(rt_ptr + base[:, None] * DP + d[None, :], r.to(rt_ptr.dtype.element_ty))
    tl.store(rzt_ptr + base, rz)


@triton.jit
def _bwd_dq(q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, den_ptr, delta_ptr, qmax_ptr, w_ptr, st_ptr, zt_ptr, dq_ptr,
            T, D, M, HQ, G: tl.constexpr, s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot,
            NC, scale, kstab, inv_sqrt_m,
            DP: tl.constexpr, MP: tl.constexpr, BM: tl.constexpr, C: tl.constexpr,
            HAS_MASK: tl.constexpr, PREC: tl.constexpr, OP: tl.constexpr):
    c, bhq, b, hq, h, bh, t, d = _query_block(HQ, G, C, DP)
    i = tl.arange(0, C)
    q, q_sq, qmax, gn, gd = _query_grads(q_ptr, do_ptr, den_ptr, None, delta_ptr, qmax_ptr, b, hq, HQ, t, d, T, D,
                                         s_qb, s_qh, s_qt, s_ob, s_oh, s_ot, scale, False, False)
    k, k_sq, v, m = _key_features(k_ptr, v_ptr, mask_ptr, b, h, t, d, T, D, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt,
                                  scale, HAS_MASK)
    bt = tl.where(i[:, None] >= i[None, :], _mm(gn, tl.trans(v), OP, PREC) + gd[:, None], 0.0)
    dqp = tl.zeros((C, DP), tl.float32)
    rs = tl.zeros((C,), tl.float32)
    for mb in range(MP // BM):
        w, j = _load_w(w_ptr, mb, d, M, D, BM)
        ok = (j < M)[None, :]
        qf = _feat(q, w, q_sq, qmax[:, None], ok, inv_sqrt_m, PREC)
        kf = _key_feat(k, w, k_sq, kstab, ok, inv_sqrt_m, PREC) * m[:, None]
        s, z = _chunk_state(st_ptr, zt_ptr, mb, j, d, bh, NC, c, DP, MP)
        dqf = _mm(gn, tl.trans(s), OP, PREC) + gd[:, None] * z[None, :] + _mm(bt, kf, OP, PREC)
        du = dqf * qf
        dqp += _mm(du, w, OP, PREC)
        rs += tl.sum(du, 1)
    dq = (dqp - rs[:, None] * q) * scale
    tl.store(dq_ptr + bhq * T * D + t[:, None] * D + d[None, :], dq.to(dq_ptr.dtype.element_ty),
             mask=(t[:, None] < T) & (d[None, :] < D))


@triton.jit
def _bwd_dkv(q_ptr, k_ptr, v_ptr, mask_ptr, do_ptr, den_ptr, delta_ptr, qmax_ptr, w_ptr, rt_ptr, rzt_ptr,
             dk_ptr, dv_ptr,
             T, D, M, HKV, G: tl.constexpr, s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot,
             NC, scale, kstab, inv_sqrt_m,
             DP: tl.constexpr, MP: tl.constexpr, BM: tl.constexpr, C: tl.constexpr,
             HAS_MASK: tl.constexpr, PREC: tl.constexpr, OP: tl.constexpr):
    """Query heads outside, feature blocks inside: each query head's `tril(g_num v^T + g_den)` is formed once
    and its intra-chunk attention `tril(phi(q) phi(k)^T)` summed over the blocks before the one `dv` product.
    The later chunks' states `R` enter with the first head. `dk` is linear in `dphi(k)`, so the heads' parts
    are contracted with the features block by block."""
    c, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // HKV, bh % HKV
    t = c * C + tl.arange(0, C)
    d = tl.arange(0, DP)
    i = tl.arange(0, C)
    tril = i[:, None] >= i[None, :]
    k, k_sq, v, m = _key_features(k_ptr, v_ptr, mask_ptr, b, h, t, d, T, D, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt,
                                  scale, HAS_MASK)
    dv = tl.zeros((C, DP), tl.float32)
    dkp = tl.zeros((C, DP), tl.float32)
    rs = tl.zeros((C,), tl.float32)
    for g in range(G):
        q, q_sq, qmax, gn, gd = _query_grads(q_ptr, do_ptr, den_ptr, None, delta_ptr, qmax_ptr, b, h * G + g,
                                             HKV * G, t, d, T, D, s_qb, s_qh, s_qt, s_ob, s_oh, s_ot, scale,
                                             False, False)
        bt = tl.where(tril, _mm(gn, tl.trans(v), OP, PREC) + gd[:, None], 0.0)
        a = tl.zeros((C, C), tl.float32)
        for mb in range(MP // BM):
            w, j = _load_w(w_ptr, mb, d, M, D, BM)
            ok = (j < M)[None, :]
            kf = _key_feat(k, w, k_sq, kstab, ok, inv_sqrt_m, PREC) * m[:, None]
            qf = _feat(q, w, q_sq, qmax[:, None], ok, inv_sqrt_m, PREC)
            dkf = _mm(tl.trans(bt), qf, OP, PREC)
            if g == 0:
                r, rz = _chunk_state(rt_ptr, rzt_ptr, mb, j, d, bh, NC, c, DP, MP)
                dkf += _mm(v, tl.trans(r), OP, PREC) + rz[None, :]
                dv += _mm(kf, r, OP, PREC)
            du = dkf * _key_slope(kf, inv_sqrt_m)
            dkp += _mm(du, w, OP, PREC)
            rs += tl.sum(du, 1)
            a += _mm(qf, tl.trans(kf), OP, PREC)
        dv += _mm(tl.trans(tl.where(tril, a, 0.0)), gn, OP, PREC)
    dk = (dkp - rs[:, None] * k) * scale
    io = (t[:, None] < T) & (d[None, :] < D)
    base = bh * T * D + t[:, None] * D + d[None, :]
    tl.store(dk_ptr + base, dk.to(dk_ptr.dtype.element_ty), mask=io)
    tl.store(dv_ptr + base, dv.to(dv_ptr.dtype.element_ty), mask=io)


class _PerformerCausal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, w, s0, z0, scale, kstab):
        q, k, v = unit_last_stride(q), unit_last_stride(k), unit_last_stride(v)
        b, hq, t, d = q.shape
        hkv = k.shape[1]
        m = w.shape[0]
        dp, mp = triton.next_power_of_2(d), triton.cdiv(m, FEATURE_TILE) * FEATURE_TILE
        settings = LAUNCH[launch_key(dp, q.dtype)]
        nc = triton.cdiv(t, settings["C"])
        consts = dict(DP=dp, MP=mp, C=settings["C"], PREC=dot_precision(q.dtype), OP=operand_type(q.dtype, dp))
        scalars = (scale, kstab, 1.0 / math.sqrt(m))
        has_mask = mask is not None
        mask_arg = mask if has_mask else w
        state_dtype = torch.float32 if consts["OP"] == "fp32" else torch.bfloat16  # what the products read
        st = torch.empty(b * hkv, nc, mp, dp, device=q.device, dtype=state_dtype)
        zt = torch.empty(b * hkv, nc, mp, device=q.device, dtype=torch.float32)
        masked = dict(consts, HAS_MASK=has_mask)
        _launch("_fwd_state", _fwd_state, lambda meta: (nc, mp // meta["BM"], b * hkv), settings, masked, k, v,
                mask_arg, w, st, zt, t, d, m, hkv, *k.stride()[:3], *v.stride()[:3], nc, *scalars)
        s_init = z_init = None
        if s0 is not None and (m, d) == (mp, dp):  # carried state already of the kernels' (MP, DP) tiles
            s_init, z_init = s0.reshape(b * hkv, mp, dp), z0.reshape(b * hkv, mp)
        elif s0 is not None:  # zero-padded to them (4 more launches per decoding step and layer)
            s_init = torch.zeros(b * hkv, mp, dp, device=q.device, dtype=torch.float32)
            s_init[:, :m, :d] = s0.reshape(b * hkv, m, d)
            z_init = torch.zeros(b * hkv, mp, device=q.device, dtype=torch.float32)
            z_init[:, :m] = z0.reshape(b * hkv, m)
        inits = None if s_init is None else (s_init, z_init)
        s_fin, z_fin = scan_blocks_(st, zt, inits=inits)  # st, zt: each chunk's starting state
        o = torch.empty(b, t, hq, d, device=q.device, dtype=q.dtype)
        den = torch.empty(b, hq, t, device=q.device, dtype=torch.float32)
        qmax = torch.empty_like(den)
        _launch("_fwd", _fwd, (nc, b * hq), settings, masked, q, k, v, mask_arg, w, st, zt, o, den, qmax, t, d, m,
                hq, hq // hkv, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], o.stride(0), o.stride(2),
                o.stride(1), nc, *scalars)
        ctx.save_for_backward(q, k, v, mask, w, st, zt, o, den, qmax)
        ctx.meta, ctx.has_init = (scalars, consts, masked, settings), s0 is not None
        ctx.set_materialize_grads(False)  # no zero-filled gradients for the final state before each backward
        finals = (s_fin[:, :m, :d].reshape(b, hkv, m, d), z_fin[:, :m].reshape(b, hkv, m))
        ctx.mark_non_differentiable(*finals)
        return (o, *finals)

    @staticmethod
    def backward(ctx, do, _ds, _dz):
        q, k, v, mask, w, st, zt, o, den, qmax = ctx.saved_tensors
        scalars, consts, masked, settings = ctx.meta
        b, hq, t, d = q.shape
        hkv, m = k.shape[1], w.shape[0]
        nc, mp = st.shape[1], st.shape[2]
        do = unit_last_stride(do)
        mask_arg = mask if masked["HAS_MASK"] else w
        grad_strides = (do.stride(0), do.stride(2), do.stride(1))
        rt = torch.empty_like(st)
        rzt = torch.empty_like(zt)
        delta = torch.empty_like(den)  # rowsum(dO * O), written by _bwd_state
        _launch("_bwd_state", _bwd_state, lambda meta: (nc, mp // meta["BM"], b * hkv), settings, consts, q, do, den,
                o, delta, qmax, w, rt, rzt, t, d, m, hkv, hq // hkv, *q.stride()[:3], *grad_strides, nc, scalars[0],
                scalars[2])
        total_r, total_z = scan_blocks_(rt, rzt, reverse=True)  # rt, rzt: the later chunks' sums
        dq = torch.empty(b, hq, t, d, device=q.device, dtype=q.dtype)
        dk = torch.empty(b, hkv, t, d, device=q.device, dtype=k.dtype)
        dv = torch.empty(b, hkv, t, d, device=q.device, dtype=v.dtype)
        common = (t, d, m)
        strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *grad_strides, nc, *scalars)
        _launch("_bwd_dq", _bwd_dq, (nc, b * hq), settings, masked, q, k, v, mask_arg, do, den, delta, qmax, w, st, zt,
                dq, *common, hq, hq // hkv, *strides)
        _launch("_bwd_dkv", _bwd_dkv, (nc, b * hkv), settings, masked, q, k, v, mask_arg, do, den, delta, qmax, w, rt,
                rzt, dk, dv, *common, hkv, hq // hkv, *strides)
        if not ctx.has_init:
            return dq, dk, dv, None, None, None, None, None, None
        ds0 = total_r[:, :m, :d].reshape(b, hkv, m, d)
        dz0 = total_z[:, :m].reshape(b, hkv, m)
        return dq, dk, dv, None, None, ds0, dz0, None, None


@torch.compiler.disable  # under torch.compile: a graph break, the kernels run eagerly between the graphs
@device_guard
def performer_causal(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    features: torch.Tensor,
    scale: float,
    key_mask: torch.Tensor | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    key_stab: float | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Causal Performer attention, queries and keys at the same positions.

    q `(B, Hq, T, D)`, k/v `(B, Hkv, T, D)`, `features (m, D)` fp32, `scale` = scaling^(1/2), `key_mask (B, T)`
    bool, `init = (S (B, Hkv, m, D), z (B, Hkv, m))` fp32 carried from earlier tokens (key features already
    stabilised by `key_stabiliser(W)`). `key_stab` is `key_stabiliser(features)` as a float; pass it (the
    attention function does) to spare a device-to-host sync, which also keeps the call capturable in a CUDA
    graph. Returns `out (B, T, Hq, D)` and the final `(S, z)` (no gradient). torch.compile does not trace into
    it (dynamo would trace Triton's launch code, which fails under Triton's CPU interpreter).
    """
    d = q.shape[-1]
    if d > 128 or d < 16:
        raise ValueError(f"performer kernel supports head_dim in [16, 128], got {d}.")
    s0, z0 = (None, None) if init is None else (init[0].float(), init[1].float())
    maskf = None if key_mask is None else key_mask.to(torch.float32).contiguous()
    kstab = float(key_stabiliser(features)) if key_stab is None else key_stab
    o, s, z = _PerformerCausal.apply(q, k, v, maskf, features.float().contiguous(), s0, z0, float(scale), kstab)
    return o, (s, z)
