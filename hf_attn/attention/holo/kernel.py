"""Causal holographic (HRR) attention as Triton kernels: forward, backward, and a carried recurrent state.

Math (per key/value head, `math.py` and `attention.py` beside this module are the reference): spectra `X = DFT(x)`, optional soft
unit projection of Q and K, bound pairs `KV_s = K_s * V_s`, memory `M_t = M_0 + sum_{s<=t} mask_s KV_s`,
output `o_t = iDFT(conj(Q_t) * M_t) / max(n_t, 1)` with `n_t` the number of real keys seen.

Design (a chunked scan; each pass reads a block once, yet the kernels run far below the memory bound):
- The real DFT of length D is one `(D x D)` real matrix product on tensor cores. Spectra are *packed*:
  `D/2` real parts and `D/2` imaginary parts, where the always-zero imaginary slot of the DC bin carries
  the (real) Nyquist bin. Column 0 is then two independent real channels, everything else complex.
  Every product (`_spectra`, `_to_rows`) runs whole or in chunks of `KC` columns read straight from memory,
  so that only `(BT, KC)` operand tiles are live; `LAUNCH` picks per kernel what runs fastest without spills.
- Pass 1 (`_fwd_state`): each block of `BT` tokens (`hf_attn.kernels.token_block`) sums its bound pairs, a `D`-float state.
- `scan.scan_blocks_` (in place, one launch) gives every block its starting memory and the final state for
  decoding.
- Pass 2 (`_fwd`): each block recomputes its bound pairs, scans them in registers (`tl.cumsum`) on top of
  its starting memory, and retrieves for all query heads of its group (GQA without repeating k/v).
  A call of one block (a decoding step, a short prompt) skips pass 1 and the scan: `_fwd` starts from the
  carried state and writes the final one, one launch per layer and token.
- Backward mirrors it: a block-sum pass of `dM` over the group's query heads (`_bwd_state`), a reverse
  `scan_blocks_` giving every block the `dM` of all later blocks (and the gradient of the initial state),
  then two passes: `_bwd_dq` rebuilds the block's memory as `_fwd` does and writes dq of every query head
  of the group; `_bwd_dkv` sums the group's `dM` tiles, suffix-scans them within the block on top of the later blocks' sum and writes dk, dv.
State per head: `D` floats (D/2+1 complex numbers), against `D x D` for linear attention.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ...kernels import device_guard, dot_precision, token_block
from ...kernels.launch import launch
from ...kernels.scan import scan_blocks_
from ...kernels.tiles import load_rows, unit_last_stride
from .math import SOFT

# Launch settings per (tokens per block, dot precision) and kernel: (KC, num_warps, num_stages), KC being the
# columns per operand chunk of the DFT products (0: the whole padded head dim in one product). Picked from
# per-kernel timings on the H100 (Triton 3.6; 16 query heads, 16k tokens, GQA 1:1 and 4:1) as the fastest
# setting without register spills at 1:1. Left at 4:1: `_fwd` spills ~50 B at head_dim 128 and ~220 B in fp32
# (their spill-free chunked forms are 35-80% slower), `_bwd_dkv` 34 B at head_dim 128 and 2 B at 64.
# `python recipes/bench/profile_kernels.py --variants holo` prints each kernel's device time for one setting.
LAUNCH = {
    (64, "tf32"): dict(_fwd_state=(0, 4, 1), _fwd=(0, 4, 1), _bwd_state=(0, 4, 1),
                       _bwd_dq=(0, 4, 1), _bwd_dkv=(0, 4, 1)),
    (32, "tf32"): dict(_fwd_state=(0, 4, 1), _fwd=(0, 4, 1), _bwd_state=(32, 4, 3),
                       _bwd_dq=(32, 4, 3), _bwd_dkv=(64, 4, 3)),
    (32, "tf32x3"): dict(_fwd_state=(16, 4, 3), _fwd=(0, 4, 1), _bwd_state=(16, 4, 3),
                         _bwd_dq=(16, 4, 3), _bwd_dkv=(16, 4, 3)),
}


def _launch(kernel: str, consts: dict) -> dict:
    """Keyword arguments (constexprs, the floor) and launch options of `kernel` for the block size / precision in
    `consts`."""
    kc, warps, stages = LAUNCH[consts["BT"], consts["PREC"]][kernel]
    return dict(consts, KC=min(kc or consts["DP"], consts["DP"]), num_warps=warps, num_stages=stages)


@triton.jit
def _pmul(ar, ai, br, bi, is0):
    """Packed `a * b`: complex product, column 0 = (DC, Nyquist) multiplied channel-wise."""
    return tl.where(is0, ar * br, ar * br - ai * bi), tl.where(is0, ai * bi, ar * bi + ai * br)


@triton.jit
def _pcmul(ar, ai, br, bi, is0):
    """Packed `conj(a) * b`."""
    return tl.where(is0, ar * br, ar * br + ai * bi), tl.where(is0, ai * bi, ar * bi - ai * br)


@triton.jit
def _block(HKV, FP: tl.constexpr, BT: tl.constexpr):
    """Prologue of every kernel, grid `(block, batch * kv head)`: ids, the block's tokens, bins, DC-bin column."""
    blk, bh = tl.program_id(0), tl.program_id(1)
    f = tl.arange(0, FP)
    return blk, bh, bh // HKV, bh % HKV, blk * BT + tl.arange(0, BT), f, (f == 0)[None, :]


@triton.jit
def _spectra(x_ptr, s_xt, t, T, D, scale, ar_ptr, ai_ptr, s_ak: tl.constexpr, s_af: tl.constexpr, f,
             DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr, KC: tl.constexpr, PREC: tl.constexpr):
    """`(x * scale) @ A` for rows `t` of x and a real pair `A = (ar, ai)` of `(DP, FP)` matrices (element `[k, f]`
    at `k * s_ak + f * s_af`), accumulated over chunks of `KC` columns read straight from memory, and `|x|^2` of
    the rows (for `scale` 1). Only `(BT, KC)` and `(KC, FP)` operand tiles are ever live."""
    xr = tl.zeros((BT, FP), dtype=tl.float32)
    xi = tl.zeros((BT, FP), dtype=tl.float32)
    ss = tl.zeros((BT,), dtype=tl.float32)
    for k0 in range(0, DP, KC):
        k = k0 + tl.arange(0, KC)
        x = load_rows(x_ptr, t, s_xt, k, T, D) * scale
        a = k[:, None] * s_ak + f[None, :] * s_af
        xr = tl.dot(x, tl.load(ar_ptr + a), xr, input_precision=PREC)
        xi = tl.dot(x, tl.load(ai_ptr + a), xi, input_precision=PREC)
        ss += tl.sum(x * x, axis=1)
    return xr, xi, ss


@triton.jit
def _to_rows(yr, yi, br_ptr, bi_ptr, s_bf: tl.constexpr, s_bn: tl.constexpr, f, t, T, D, out_ptr, s_ot,
             c, x_ptr, s_xt, DP: tl.constexpr, KC: tl.constexpr, ADD_X: tl.constexpr, PREC: tl.constexpr):
    """Stores rows `t` of `yr @ Br + yi @ Bi` (plus `c * x` with ADD_X) for a real pair `B` of `(FP, DP)` matrices
    (element `[f, n]` at `f * s_bf + n * s_bn`), in chunks of `KC` output columns."""
    for n0 in range(0, DP, KC):
        n = n0 + tl.arange(0, KC)
        bm = f[:, None] * s_bf + n[None, :] * s_bn
        out = (tl.dot(yr, tl.load(br_ptr + bm), input_precision=PREC)
               + tl.dot(yi, tl.load(bi_ptr + bm), input_precision=PREC))
        if ADD_X:
            out = c[:, None] * load_rows(x_ptr, t, s_xt, n, T, D) + out
        tl.store(out_ptr + t[:, None] * s_ot + n[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=(t[:, None] < T) & (n[None, :] < D))


@triton.jit
def _unit(xr, xi, ss, is0, SOFT2):
    """Soft unit-magnitude projection of packed spectra (per bin, floor `SOFT^2 * |x|^2`, `ss = |x|^2`)."""
    p = xr * xr + xi * xi
    s = SOFT2 * ss[:, None] + 1e-12
    rr = tl.rsqrt(tl.where(is0, xr * xr, p) + s)
    ri = tl.rsqrt(tl.where(is0, xi * xi, p) + s)
    return xr * rr, xi * ri


@triton.jit
def _unit_bwd(xr, xi, ss, is0, dyr, dyi, SOFT2):
    """Gradient of `_unit` -> (d spectrum re, d spectrum im, `c`: the gradient on x through the floor is `c * x`)."""
    p = xr * xr + xi * xi
    s = SOFT2 * ss[:, None] + 1e-12
    rr = tl.rsqrt(tl.where(is0, xr * xr, p) + s)
    ri = tl.rsqrt(tl.where(is0, xi * xi, p) + s)
    dpr = -0.5 * dyr * xr * rr * rr * rr
    dpi = -0.5 * dyi * xi * ri * ri * ri
    tot = dpr + dpi
    dxr = dyr * rr + 2.0 * xr * tl.where(is0, dpr, tot)
    dxi = dyi * ri + 2.0 * xi * tl.where(is0, dpi, tot)
    return dxr, dxi, (2.0 * SOFT2) * tl.sum(tot, axis=1)


@triton.jit
def _unit_spectra(x_ptr, s_xt, t, T, D, cm_ptr, sm_ptr, f, is0, DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr,
                  KC: tl.constexpr, UNITARY: tl.constexpr, SOFT2, PREC: tl.constexpr):
    """Spectra of q or k rows: raw (re, im, `|x|^2`) and as used for binding/retrieval (projected with UNITARY)."""
    xr0, xi0, ss = _spectra(x_ptr, s_xt, t, T, D, 1.0, cm_ptr, sm_ptr, FP, 1, f, DP, FP, BT, KC, PREC)
    xr, xi = xr0, xi0
    if UNITARY:
        xr, xi = _unit(xr0, xi0, ss, is0, SOFT2)
    return xr0, xi0, ss, xr, xi


@triton.jit
def _key_mask(mask_ptr, t, T, HAS_MASK: tl.constexpr):
    """1.0 for the block's real keys, 0.0 for padding and rows past `T`."""
    if HAS_MASK:
        m = tl.load(mask_ptr + t, mask=t < T, other=0.0)
    else:
        m = tl.where(t < T, 1.0, 0.0)
    return m


@triton.jit
def _bound_pairs(k_ptr, v_ptr, mask_ptr, s_kt, s_vt, t, f, T, D, cm_ptr, sm_ptr, is0,
                 DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr, KC: tl.constexpr,
                 HAS_MASK: tl.constexpr, UNITARY: tl.constexpr, SOFT2, PREC: tl.constexpr):
    """Masked `K_s * V_s` of one block."""
    kr0, ki0, ks, kr, ki = _unit_spectra(k_ptr, s_kt, t, T, D, cm_ptr, sm_ptr, f, is0,
                                         DP, FP, BT, KC, UNITARY, SOFT2, PREC)
    vr, vi, _ = _spectra(v_ptr, s_vt, t, T, D, 1.0, cm_ptr, sm_ptr, FP, 1, f, DP, FP, BT, KC, PREC)
    br, bi = _pmul(kr, ki, vr, vi, is0)
    m = _key_mask(mask_ptr, t, T, HAS_MASK)[:, None]
    return br * m, bi * m


@triton.jit
def _memory(k_ptr, v_ptr, mask_ptr, start_ptr, s_kt, s_vt, t, f, T, D, cm_ptr, sm_ptr, is0,
            DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr, KC: tl.constexpr,
            HAS_MASK: tl.constexpr, UNITARY: tl.constexpr, SOFT2, PREC: tl.constexpr):
    """`M_t` at every token of the block: its bound pairs scanned in registers on top of the block's start."""
    br, bi = _bound_pairs(k_ptr, v_ptr, mask_ptr, s_kt, s_vt, t, f, T, D, cm_ptr, sm_ptr, is0,
                          DP, FP, BT, KC, HAS_MASK, UNITARY, SOFT2, PREC)
    mr = tl.cumsum(br, axis=0) + tl.load(start_ptr + f)[None, :]
    return mr, tl.cumsum(bi, axis=0) + tl.load(start_ptr + FP + f)[None, :]


@triton.jit
def _inv_counts(n_ptr, t, T):
    """`1 / max(n_t, 1)`: retrieval divides by the number of real keys seen."""
    return 1.0 / tl.maximum(tl.load(n_ptr + t, mask=t < T, other=1.0), 1.0)


@triton.jit
def _out_grad(do_ptr, s_ot, t, T, D, inv_n, icr_ptr, ici_ptr, f,
              DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr, KC: tl.constexpr, PREC: tl.constexpr):
    """Gradient on the packed `conj(Q_t) * M_t` from `do` (adjoint of the inverse DFT, `(FP, DP)`, and of `1/n_t`)."""
    gr, gi, _ = _spectra(do_ptr, s_ot, t, T, D, inv_n[:, None], icr_ptr, ici_ptr, 1, DP, f, DP, FP, BT, KC, PREC)
    return gr, gi


@triton.jit
def _dm(q_ptr, do_ptr, s_qt, s_ot, t, f, T, D, inv_n, cm_ptr, sm_ptr, icr_ptr, ici_ptr, is0,
        DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr, KC: tl.constexpr,
        UNITARY: tl.constexpr, SOFT2, PREC: tl.constexpr):
    """One query head's `dM_t = Q_t * G_t` (the gradient on the memory at each token of the block)."""
    qr0, qi0, qs, qr, qi = _unit_spectra(q_ptr, s_qt, t, T, D, cm_ptr, sm_ptr, f, is0,
                                         DP, FP, BT, KC, UNITARY, SOFT2, PREC)
    gr, gi = _out_grad(do_ptr, s_ot, t, T, D, inv_n, icr_ptr, ici_ptr, f, DP, FP, BT, KC, PREC)
    return _pmul(qr, qi, gr, gi, is0)


@triton.jit
def _fwd_state(k_ptr, v_ptr, mask_ptr, cm_ptr, sm_ptr, st_ptr,
               T, D, HKV, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, NB,
               DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr, KC: tl.constexpr,
               HAS_MASK: tl.constexpr, UNITARY: tl.constexpr, SOFT2, PREC: tl.constexpr):
    blk, bh, b, h, t, f, is0 = _block(HKV, FP, BT)
    br, bi = _bound_pairs(k_ptr + b * s_kb + h * s_kh, v_ptr + b * s_vb + h * s_vh, mask_ptr + b * T, s_kt, s_vt,
                          t, f, T, D, cm_ptr, sm_ptr, is0, DP, FP, BT, KC, HAS_MASK, UNITARY, SOFT2, PREC)
    out = st_ptr + (bh * NB + blk) * 2 * FP
    tl.store(out + f, tl.sum(br, axis=0))
    tl.store(out + FP + f, tl.sum(bi, axis=0))


@triton.jit
def _fwd(q_ptr, k_ptr, v_ptr, mask_ptr, n_ptr, cm_ptr, sm_ptr, icr_ptr, ici_ptr, start_ptr, o_ptr, final_ptr,
         T, D, HKV, G: tl.constexpr, s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot, NB,
         DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr, KC: tl.constexpr, HAS_MASK: tl.constexpr,
         UNITARY: tl.constexpr, SOFT2, PREC: tl.constexpr, STORE_FINAL: tl.constexpr):
    blk, bh, b, h, t, f, is0 = _block(HKV, FP, BT)
    mr, mi = _memory(k_ptr + b * s_kb + h * s_kh, v_ptr + b * s_vb + h * s_vh, mask_ptr + b * T,
                     start_ptr + (bh * NB + blk) * 2 * FP, s_kt, s_vt, t, f, T, D, cm_ptr, sm_ptr, is0,
                     DP, FP, BT, KC, HAS_MASK, UNITARY, SOFT2, PREC)
    if STORE_FINAL:  # a single block: its memory after the last row (rows past T add nothing) is the final state
        last = (tl.arange(0, BT) == BT - 1)[:, None]
        tl.store(final_ptr + bh * 2 * FP + f, tl.sum(tl.where(last, mr, 0.0), axis=0))
        tl.store(final_ptr + bh * 2 * FP + FP + f, tl.sum(tl.where(last, mi, 0.0), axis=0))
    inv_n = _inv_counts(n_ptr + b * T, t, T)[:, None]
    for g in range(G):
        hq = h * G + g
        qr0, qi0, qs, qr, qi = _unit_spectra(q_ptr + b * s_qb + hq * s_qh, s_qt, t, T, D, cm_ptr, sm_ptr, f, is0,
                                             DP, FP, BT, KC, UNITARY, SOFT2, PREC)
        pr, pi = _pcmul(qr, qi, mr, mi, is0)
        _to_rows(pr * inv_n, pi * inv_n, icr_ptr, ici_ptr, DP, 1, f, t, T, D, o_ptr + b * s_ob + hq * s_oh, s_ot,
                 None, None, None, DP, KC, False, PREC)


@triton.jit
def _bwd_state(q_ptr, do_ptr, n_ptr, cm_ptr, sm_ptr, icr_ptr, ici_ptr, dst_ptr,
               T, D, HKV, G: tl.constexpr, s_qb, s_qh, s_qt, s_ob, s_oh, s_ot, NB,
               DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr, KC: tl.constexpr,
               UNITARY: tl.constexpr, SOFT2, PREC: tl.constexpr):
    blk, bh, b, h, t, f, is0 = _block(HKV, FP, BT)
    inv_n = _inv_counts(n_ptr + b * T, t, T)
    accr = tl.zeros((FP,), dtype=tl.float32)
    acci = tl.zeros((FP,), dtype=tl.float32)
    for g in range(G):
        hq = h * G + g
        dmr, dmi = _dm(q_ptr + b * s_qb + hq * s_qh, do_ptr + b * s_ob + hq * s_oh, s_qt, s_ot, t, f, T, D, inv_n,
                       cm_ptr, sm_ptr, icr_ptr, ici_ptr, is0, DP, FP, BT, KC, UNITARY, SOFT2, PREC)
        accr += tl.sum(dmr, axis=0)
        acci += tl.sum(dmi, axis=0)
    out = dst_ptr + (bh * NB + blk) * 2 * FP
    tl.store(out + f, accr)
    tl.store(out + FP + f, acci)


@triton.jit
def _bwd_dq(q_ptr, k_ptr, v_ptr, mask_ptr, n_ptr, do_ptr, cm_ptr, sm_ptr, icr_ptr, ici_ptr, start_ptr, dq_ptr,
            T, D, HKV, G: tl.constexpr, s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot, NB,
            DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr, KC: tl.constexpr,
            HAS_MASK: tl.constexpr, UNITARY: tl.constexpr, SOFT2, PREC: tl.constexpr):
    """dq of the group's query heads: `conj(G_t) * M_t` through the unit projection and the DFT."""
    blk, bh, b, h, t, f, is0 = _block(HKV, FP, BT)
    mr, mi = _memory(k_ptr + b * s_kb + h * s_kh, v_ptr + b * s_vb + h * s_vh, mask_ptr + b * T,
                     start_ptr + (bh * NB + blk) * 2 * FP, s_kt, s_vt, t, f, T, D, cm_ptr, sm_ptr, is0,
                     DP, FP, BT, KC, HAS_MASK, UNITARY, SOFT2, PREC)
    inv_n = _inv_counts(n_ptr + b * T, t, T)
    for g in range(G):
        hq = h * G + g
        gr, gi = _out_grad(do_ptr + b * s_ob + hq * s_oh, s_ot, t, T, D, inv_n, icr_ptr, ici_ptr, f,
                           DP, FP, BT, KC, PREC)
        dqr, dqi = _pcmul(gr, gi, mr, mi, is0)
        q = q_ptr + b * s_qb + hq * s_qh
        c = tl.zeros((BT,), dtype=tl.float32)
        if UNITARY:
            qr0, qi0, qs = _spectra(q, s_qt, t, T, D, 1.0, cm_ptr, sm_ptr, FP, 1, f, DP, FP, BT, KC, PREC)
            dqr, dqi, c = _unit_bwd(qr0, qi0, qs, is0, dqr, dqi, SOFT2)
        _to_rows(dqr, dqi, cm_ptr, sm_ptr, 1, FP, f, t, T, D, dq_ptr + (bh * G + g) * T * D, D,
                 c, q, s_qt, DP, KC, UNITARY, PREC)


@triton.jit
def _bwd_dkv(q_ptr, k_ptr, v_ptr, mask_ptr, n_ptr, do_ptr, cm_ptr, sm_ptr, icr_ptr, ici_ptr, future_ptr,
             dk_ptr, dv_ptr,
             T, D, HKV, G: tl.constexpr, s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot, NB,
             DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr, KC: tl.constexpr,
             HAS_MASK: tl.constexpr, UNITARY: tl.constexpr, SOFT2, PREC: tl.constexpr):
    """dk, dv of one key/value head from `dKV_s = mask_s sum_{t>=s} dM_t` (the group's query heads summed)."""
    blk, bh, b, h, t, f, is0 = _block(HKV, FP, BT)
    inv_n = _inv_counts(n_ptr + b * T, t, T)
    accr = tl.zeros((BT, FP), dtype=tl.float32)
    acci = tl.zeros((BT, FP), dtype=tl.float32)
    for g in range(G):
        hq = h * G + g
        dmr, dmi = _dm(q_ptr + b * s_qb + hq * s_qh, do_ptr + b * s_ob + hq * s_oh, s_qt, s_ot, t, f, T, D, inv_n,
                       cm_ptr, sm_ptr, icr_ptr, ici_ptr, is0, DP, FP, BT, KC, UNITARY, SOFT2, PREC)
        accr += dmr
        acci += dmi
    m = _key_mask(mask_ptr + b * T, t, T, HAS_MASK)[:, None]
    future = future_ptr + (bh * NB + blk) * 2 * FP
    # suffix sums within the block (inclusive) plus everything after it
    dbr = (tl.sum(accr, axis=0)[None, :] - tl.cumsum(accr, axis=0) + accr + tl.load(future + f)[None, :]) * m
    dbi = (tl.sum(acci, axis=0)[None, :] - tl.cumsum(acci, axis=0) + acci + tl.load(future + FP + f)[None, :]) * m
    k, v = k_ptr + b * s_kb + h * s_kh, v_ptr + b * s_vb + h * s_vh
    kr0, ki0, ks, kr, ki = _unit_spectra(k, s_kt, t, T, D, cm_ptr, sm_ptr, f, is0,
                                         DP, FP, BT, KC, UNITARY, SOFT2, PREC)
    dvr, dvi = _pcmul(kr, ki, dbr, dbi, is0)
    _to_rows(dvr, dvi, cm_ptr, sm_ptr, 1, FP, f, t, T, D, dv_ptr + bh * T * D, D, None, None, None, DP, KC, False, PREC)
    vr, vi, _ = _spectra(v, s_vt, t, T, D, 1.0, cm_ptr, sm_ptr, FP, 1, f, DP, FP, BT, KC, PREC)
    dkr, dki = _pcmul(vr, vi, dbr, dbi, is0)
    c = tl.zeros((BT,), dtype=tl.float32)
    if UNITARY:
        dkr, dki, c = _unit_bwd(kr0, ki0, ks, is0, dkr, dki, SOFT2)
    _to_rows(dkr, dki, cm_ptr, sm_ptr, 1, FP, f, t, T, D, dk_ptr + bh * T * D, D, c, k, s_kt, DP, KC, UNITARY, PREC)


_MATRICES: dict = {}


def dft_matrices(d: int, device) -> tuple[torch.Tensor, ...]:
    """Packed real DFT `(DP, FP)` (cos, sin) and inverse `(FP, DP)` matrices, zero-padded to powers of two."""
    key = (d, str(device))
    if key not in _MATRICES:
        dp, fp = triton.next_power_of_2(d), state_width(d)
        n = torch.arange(d, dtype=torch.float64)
        j = torch.arange(d // 2, dtype=torch.float64)
        ang = 2 * math.pi * n[:, None] * j[None, :] / d
        alt = torch.cos(math.pi * n)  # (-1)^n: the Nyquist bin
        cm, sm = torch.cos(ang), -torch.sin(ang)
        sm[:, 0] = alt
        weight = torch.full((d // 2,), 2.0, dtype=torch.float64)
        weight[0] = 1.0
        icr = weight[:, None] * torch.cos(ang).T / d
        ici = -2.0 * torch.sin(ang).T / d
        ici[0] = alt / d
        out = []
        for m, shape in ((cm, (dp, fp)), (sm, (dp, fp)), (icr, (fp, dp)), (ici, (fp, dp))):
            padded = torch.zeros(shape, dtype=torch.float64)
            padded[: m.shape[0], : m.shape[1]] = m
            out.append(padded.float().to(device).contiguous())
        _MATRICES[key] = tuple(out)
    return _MATRICES[key]


class _HoloCausal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, counts, init, unitary, soft):
        q, k, v = unit_last_stride(q), unit_last_stride(k), unit_last_stride(v)
        b, hq, t, d = q.shape
        hkv = k.shape[1]
        cm, sm, icr, ici = dft_matrices(d, q.device)
        dp, fp = cm.shape
        bt = token_block(dp, q.dtype)
        nb = triton.cdiv(t, bt)
        # SOFT2 (the floor squared) is a runtime scalar, the rest constexprs: another floor compiles nothing new
        consts = dict(DP=dp, FP=fp, BT=bt, UNITARY=unitary, SOFT2=soft**2, PREC=dot_precision(q.dtype))
        has_mask = mask is not None
        mask_arg = mask if has_mask else counts  # any float pointer; unread without HAS_MASK
        grid = (nb, b * hkv)
        single = nb == 1  # decoding and short prompts: no block-sum pass, no scan, `_fwd` writes the final state
        if single:
            final = torch.empty(b, hkv, 2, fp, device=q.device, dtype=torch.float32)
            st = (init.reshape(b * hkv, 1, 2, fp).contiguous() if init is not None
                  else final.new_zeros(b * hkv, 1, 2, fp))
        else:
            st = torch.empty(b * hkv, nb, 2, fp, device=q.device, dtype=torch.float32)
            launch(_fwd_state, grid, k, v, mask_arg, cm, sm, st, t, d, hkv, *k.stride()[:3], *v.stride()[:3], nb,
                   HAS_MASK=has_mask, **_launch("_fwd_state", consts))
            (final,) = scan_blocks_(st, inits=None if init is None else (init,))
            final = final.view(b, hkv, 2, fp)  # st now holds each block's starting memory
        o = torch.empty(b, t, hq, d, device=q.device, dtype=q.dtype)
        launch(_fwd, grid, q, k, v, mask_arg, counts, cm, sm, icr, ici, st, o, final, t, d, hkv, hq // hkv,
               *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], o.stride(0), o.stride(2), o.stride(1), nb,
               HAS_MASK=has_mask, STORE_FINAL=single, **_launch("_fwd", consts))
        ctx.save_for_backward(q, k, v, mask, counts, st)
        ctx.consts, ctx.has_mask, ctx.has_init = consts, has_mask, init is not None
        ctx.mark_non_differentiable(final)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for `final` before each backward
        return o, final

    @staticmethod
    def backward(ctx, do, _dfinal):
        q, k, v, mask, counts, start = ctx.saved_tensors
        b, hq, t, d = q.shape
        hkv = k.shape[1]
        cm, sm, icr, ici = dft_matrices(d, q.device)
        nb, fp = start.shape[1], start.shape[-1]
        do = unit_last_stride(do)
        grid = (nb, b * hkv)
        dst = torch.empty_like(start)
        launch(_bwd_state, grid, q, do, counts, cm, sm, icr, ici, dst, t, d, hkv, hq // hkv, *q.stride()[:3],
               do.stride(0), do.stride(2), do.stride(1), nb, **_launch("_bwd_state", ctx.consts))
        (total,) = scan_blocks_(dst, reverse=True)  # dst now holds the dM of all later blocks
        dq = torch.empty(b, hq, t, d, device=q.device, dtype=q.dtype)
        dk = torch.empty(b, hkv, t, d, device=q.device, dtype=k.dtype)
        dv = torch.empty(b, hkv, t, d, device=q.device, dtype=v.dtype)
        mask_arg = mask if ctx.has_mask else counts
        strides = (t, d, hkv, hq // hkv, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
                   do.stride(0), do.stride(2), do.stride(1), nb)
        launch(_bwd_dq, grid, q, k, v, mask_arg, counts, do, cm, sm, icr, ici, start, dq, *strides,
               HAS_MASK=ctx.has_mask, **_launch("_bwd_dq", ctx.consts))
        launch(_bwd_dkv, grid, q, k, v, mask_arg, counts, do, cm, sm, icr, ici, dst, dk, dv, *strides,
               HAS_MASK=ctx.has_mask, **_launch("_bwd_dkv", ctx.consts))
        return dq, dk, dv, None, None, total.view(b, hkv, 2, fp) if ctx.has_init else None, None, None


def state_width(head_dim: int) -> int:
    """Floats per packed spectrum row the kernels use for `head_dim` (the `FP` of the state `(2, FP)`)."""
    return max(16, triton.next_power_of_2(head_dim // 2))


@torch.compiler.disable  # under torch.compile: a graph break, the kernels run eagerly between the graphs
@device_guard
def holo_causal(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    unitary: bool = True,
    soft: float = SOFT,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Causal holo attention, queries and keys at the same positions.

    q `(B, Hq, T, D)`, k/v `(B, Hkv, T, D)` (any strides with a unit last stride), `key_mask (B, T)` bool
    (True = real token), `init = (memory (B, Hkv, 2, FP) fp32 packed, count (B,))` carried from earlier tokens;
    `soft`: the unit projection's floor (`math.spectrum`).
    Returns `out (B, T, Hq, D)` in q's dtype and the final `(memory, count)` (no gradient through it).
    torch.compile does not trace into it (dynamo would trace Triton's launch code, which fails under Triton's
    CPU interpreter).
    """
    b, hq, t, d = q.shape
    if d % 2 or d > 128 or d < 16:
        raise ValueError(f"holo kernel supports even head_dim in [16, 128], got {d}.")
    mem0, n0 = (None, None) if init is None else (init[0].float(), init[1].float())
    maskf = None if key_mask is None else key_mask.to(torch.float32).contiguous()
    ones = maskf if maskf is not None else torch.ones(b, t, device=q.device, dtype=torch.float32)
    counts = ones.cumsum(-1)
    if n0 is not None:
        counts = counts + n0[:, None]
    out, mem = _HoloCausal.apply(q, k, v, maskf, counts, mem0, unitary, soft)
    n = counts[:, -1].detach() if t else (n0 if n0 is not None else torch.zeros(b, device=q.device))
    return out, (mem, n)


def pack_spectrum(spec: torch.Tensor, fp: int) -> torch.Tensor:
    """`rfft` spectrum `(..., D/2+1)` complex -> the kernels' packed `(..., 2, FP)` real layout."""
    d2 = spec.shape[-1] - 1
    re = torch.zeros(*spec.shape[:-1], fp, device=spec.device, dtype=torch.float32)
    im = torch.zeros_like(re)
    re[..., :d2] = spec.real[..., :d2]
    im[..., 1:d2] = spec.imag[..., 1:d2]
    im[..., 0] = spec.real[..., d2]
    return torch.stack((re, im), -2)


def unpack_spectrum(packed: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Inverse of `pack_spectrum`: `(..., 2, FP)` -> complex `(..., D/2+1)`."""
    d2 = head_dim // 2
    re, im = packed[..., 0, :d2], packed[..., 1, :d2]
    real = torch.cat((re, packed[..., 1, :1]), -1)
    imag = torch.cat((torch.zeros_like(im[..., :1]), im[..., 1:], torch.zeros_like(im[..., :1])), -1)
    return torch.complex(real, imag)
