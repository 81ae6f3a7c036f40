"""Causal holographic (HRR) attention as Triton kernels: forward, backward, and a carried recurrent state.

Math (per key/value head, `hf_attn/attention/holo.py` is the reference): spectra `X = DFT(x)`, optional soft
unit projection of Q and K, bound pairs `KV_s = K_s * V_s`, memory `M_t = M_0 + sum_{s<=t} mask_s KV_s`,
output `o_t = iDFT(conj(Q_t) * M_t) / max(n_t, 1)` with `n_t` the number of real keys seen.

Design (a chunked scan, memory-bound by construction):
- The real DFT of length D is one `(D x D)` real matrix product on tensor cores. Spectra are *packed*:
  `D/2` real parts and `D/2` imaginary parts, where the always-zero imaginary slot of the DC bin carries
  the (real) Nyquist bin. Column 0 is then two independent real channels, everything else complex.
- Pass 1 (`_fwd_state`): each block of `BT` tokens (`hf_attn.kernels.token_block`) sums its bound pairs, a `D`-float state.
- A tiny `torch.cumsum` over blocks gives every block its starting memory (and the final state for decoding).
- Pass 2 (`_fwd`): each block recomputes its bound pairs, scans them in registers (`tl.cumsum`) on top of
  its starting memory, and retrieves for all query heads of its group (GQA without repeating k/v).
- Backward mirrors it: a block-sum pass of `dM`, a reverse `cumsum`, and one pass writing dq, dk, dv.
State per head: `D` floats (D/2+1 complex numbers), against `D x D` for linear attention.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import dot_precision, token_block

SOFT = 0.1  # must equal hf_attn.attention.holo.SOFT (checked by the tests)


@triton.jit
def _pmul(ar, ai, br, bi, is0):
    """Packed `a * b`: complex product, column 0 = (DC, Nyquist) multiplied channel-wise."""
    return tl.where(is0, ar * br, ar * br - ai * bi), tl.where(is0, ai * bi, ar * bi + ai * br)


@triton.jit
def _pcmul(ar, ai, br, bi, is0):
    """Packed `conj(a) * b`."""
    return tl.where(is0, ar * br, ar * br + ai * bi), tl.where(is0, ai * bi, ar * bi - ai * br)


@triton.jit
def _load_rows(ptr, t, stride_t, d, T, D):
    """`(BT, DP)` fp32 tile of rows `t`, zero outside `t < T`, `d < D`."""
    return tl.load(ptr + t[:, None] * stride_t + d[None, :], mask=(t[:, None] < T) & (d[None, :] < D), other=0.0).to(
        tl.float32
    )


@triton.jit
def _dft_tiles(cm_ptr, sm_ptr, icr_ptr, ici_ptr, d, f, DP: tl.constexpr, FP: tl.constexpr):
    """The packed DFT `(DP, FP)` and inverse `(FP, DP)` matrices (small, L2-resident)."""
    fwd = d[:, None] * FP + f[None, :]
    inv = f[:, None] * DP + d[None, :]
    return tl.load(cm_ptr + fwd), tl.load(sm_ptr + fwd), tl.load(icr_ptr + inv), tl.load(ici_ptr + inv)


@triton.jit
def _spectra(x, cm, sm, PREC: tl.constexpr):
    return tl.dot(x, cm, input_precision=PREC), tl.dot(x, sm, input_precision=PREC)


@triton.jit
def _unit(xr, xi, x, is0, SOFT2: tl.constexpr):
    """Soft unit-magnitude projection of packed spectra (per bin, floor `SOFT^2 * |x|^2`)."""
    p = xr * xr + xi * xi
    s = SOFT2 * tl.sum(x * x, axis=1)[:, None] + 1e-12
    rr = tl.rsqrt(tl.where(is0, xr * xr, p) + s)
    ri = tl.rsqrt(tl.where(is0, xi * xi, p) + s)
    return xr * rr, xi * ri


@triton.jit
def _unit_bwd(xr, xi, x, is0, dyr, dyi, SOFT2: tl.constexpr):
    """Gradient of `_unit` -> (d spectrum re, d spectrum im, d x through the floor)."""
    p = xr * xr + xi * xi
    s = SOFT2 * tl.sum(x * x, axis=1)[:, None] + 1e-12
    rr = tl.rsqrt(tl.where(is0, xr * xr, p) + s)
    ri = tl.rsqrt(tl.where(is0, xi * xi, p) + s)
    dpr = -0.5 * dyr * xr * rr * rr * rr
    dpi = -0.5 * dyi * xi * ri * ri * ri
    tot = dpr + dpi
    dxr = dyr * rr + 2.0 * xr * tl.where(is0, dpr, tot)
    dxi = dyi * ri + 2.0 * xi * tl.where(is0, dpi, tot)
    dx = (2.0 * SOFT2) * tl.sum(tot, axis=1)[:, None] * x
    return dxr, dxi, dx


@triton.jit
def _bound_pairs(k_ptr, v_ptr, mask_ptr, t, d, T, D, s_kt, s_vt, cm, sm, is0,
                 HAS_MASK: tl.constexpr, UNITARY: tl.constexpr, SOFT2: tl.constexpr, PREC: tl.constexpr):
    """Masked `K_s * V_s` of one block, plus what the backward needs (k, raw K spectra, V spectra, mask)."""
    k = _load_rows(k_ptr, t, s_kt, d, T, D)
    v = _load_rows(v_ptr, t, s_vt, d, T, D)
    kr0, ki0 = _spectra(k, cm, sm, PREC)
    vr, vi = _spectra(v, cm, sm, PREC)
    kr, ki = kr0, ki0
    if UNITARY:
        kr, ki = _unit(kr0, ki0, k, is0, SOFT2)
    br, bi = _pmul(kr, ki, vr, vi, is0)
    if HAS_MASK:
        m = tl.load(mask_ptr + t, mask=t < T, other=0.0)
    else:
        m = tl.where(t < T, 1.0, 0.0)
    return br * m[:, None], bi * m[:, None], k, v, kr0, ki0, kr, ki, vr, vi, m


@triton.jit
def _fwd_state(k_ptr, v_ptr, mask_ptr, cm_ptr, sm_ptr, st_ptr,
               T, D, HKV, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, NB,
               DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr,
               HAS_MASK: tl.constexpr, UNITARY: tl.constexpr, SOFT2: tl.constexpr, PREC: tl.constexpr):
    blk, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // HKV, bh % HKV
    t = blk * BT + tl.arange(0, BT)
    d = tl.arange(0, DP)
    f = tl.arange(0, FP)
    is0 = (f == 0)[None, :]
    cm = tl.load(cm_ptr + d[:, None] * FP + f[None, :])
    sm = tl.load(sm_ptr + d[:, None] * FP + f[None, :])
    br, bi, k, v, kr0, ki0, kr, ki, vr, vi, m = _bound_pairs(
        k_ptr + b * s_kb + h * s_kh, v_ptr + b * s_vb + h * s_vh, mask_ptr + b * T, t, d, T, D,
        s_kt, s_vt, cm, sm, is0, HAS_MASK, UNITARY, SOFT2, PREC)
    out = st_ptr + (bh * NB + blk) * 2 * FP
    tl.store(out + f, tl.sum(br, axis=0))
    tl.store(out + FP + f, tl.sum(bi, axis=0))


@triton.jit
def _fwd(q_ptr, k_ptr, v_ptr, mask_ptr, n_ptr, cm_ptr, sm_ptr, icr_ptr, ici_ptr, start_ptr, o_ptr,
         T, D, HKV, G: tl.constexpr, s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot, NB,
         DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr,
         HAS_MASK: tl.constexpr, UNITARY: tl.constexpr, SOFT2: tl.constexpr, PREC: tl.constexpr):
    blk, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // HKV, bh % HKV
    t = blk * BT + tl.arange(0, BT)
    d = tl.arange(0, DP)
    f = tl.arange(0, FP)
    is0 = (f == 0)[None, :]
    cm, sm, icr, ici = _dft_tiles(cm_ptr, sm_ptr, icr_ptr, ici_ptr, d, f, DP, FP)
    br, bi, k, v, kr0, ki0, kr, ki, vr, vi, m = _bound_pairs(
        k_ptr + b * s_kb + h * s_kh, v_ptr + b * s_vb + h * s_vh, mask_ptr + b * T, t, d, T, D,
        s_kt, s_vt, cm, sm, is0, HAS_MASK, UNITARY, SOFT2, PREC)
    start = start_ptr + (bh * NB + blk) * 2 * FP
    mr = tl.cumsum(br, axis=0) + tl.load(start + f)[None, :]
    mi = tl.cumsum(bi, axis=0) + tl.load(start + FP + f)[None, :]
    inv_n = 1.0 / tl.maximum(tl.load(n_ptr + b * T + t, mask=t < T, other=1.0), 1.0)
    for g in range(G):
        hq = h * G + g
        q = _load_rows(q_ptr + b * s_qb + hq * s_qh, t, s_qt, d, T, D)
        qr, qi = _spectra(q, cm, sm, PREC)
        if UNITARY:
            qr, qi = _unit(qr, qi, q, is0, SOFT2)
        pr, pi = _pcmul(qr, qi, mr, mi, is0)
        out = tl.dot(pr * inv_n[:, None], icr, input_precision=PREC) + tl.dot(pi * inv_n[:, None], ici, input_precision=PREC)
        optr = o_ptr + b * s_ob + hq * s_oh + t[:, None] * s_ot + d[None, :]
        tl.store(optr, out.to(o_ptr.dtype.element_ty), mask=(t[:, None] < T) & (d[None, :] < D))


@triton.jit
def _bwd_state(q_ptr, do_ptr, n_ptr, cm_ptr, sm_ptr, icr_ptr, ici_ptr, dst_ptr,
               T, D, HKV, G: tl.constexpr, s_qb, s_qh, s_qt, s_ob, s_oh, s_ot, NB,
               DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr,
               UNITARY: tl.constexpr, SOFT2: tl.constexpr, PREC: tl.constexpr):
    blk, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // HKV, bh % HKV
    t = blk * BT + tl.arange(0, BT)
    d = tl.arange(0, DP)
    f = tl.arange(0, FP)
    is0 = (f == 0)[None, :]
    cm, sm, icr, ici = _dft_tiles(cm_ptr, sm_ptr, icr_ptr, ici_ptr, d, f, DP, FP)
    inv_n = 1.0 / tl.maximum(tl.load(n_ptr + b * T + t, mask=t < T, other=1.0), 1.0)
    accr = tl.zeros((FP,), dtype=tl.float32)
    acci = tl.zeros((FP,), dtype=tl.float32)
    for g in range(G):
        hq = h * G + g
        q = _load_rows(q_ptr + b * s_qb + hq * s_qh, t, s_qt, d, T, D)
        do = _load_rows(do_ptr + b * s_ob + hq * s_oh, t, s_ot, d, T, D) * inv_n[:, None]
        qr, qi = _spectra(q, cm, sm, PREC)
        if UNITARY:
            qr, qi = _unit(qr, qi, q, is0, SOFT2)
        gr = tl.dot(do, tl.trans(icr), input_precision=PREC)
        gi = tl.dot(do, tl.trans(ici), input_precision=PREC)
        dmr, dmi = _pmul(qr, qi, gr, gi, is0)
        accr += tl.sum(dmr, axis=0)
        acci += tl.sum(dmi, axis=0)
    out = dst_ptr + (bh * NB + blk) * 2 * FP
    tl.store(out + f, accr)
    tl.store(out + FP + f, acci)


@triton.jit
def _to_signal(xr, xi, cm, sm, PREC: tl.constexpr):
    """Adjoint of `_spectra`: gradient on the packed spectrum -> gradient on the signal."""
    return tl.dot(xr, tl.trans(cm), input_precision=PREC) + tl.dot(xi, tl.trans(sm), input_precision=PREC)


@triton.jit
def _bwd(q_ptr, k_ptr, v_ptr, mask_ptr, n_ptr, do_ptr, cm_ptr, sm_ptr, icr_ptr, ici_ptr, start_ptr, future_ptr,
         dq_ptr, dk_ptr, dv_ptr,
         T, D, HKV, G: tl.constexpr, s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh, s_ot, NB,
         DP: tl.constexpr, FP: tl.constexpr, BT: tl.constexpr,
         HAS_MASK: tl.constexpr, UNITARY: tl.constexpr, SOFT2: tl.constexpr, PREC: tl.constexpr):
    blk, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // HKV, bh % HKV
    t = blk * BT + tl.arange(0, BT)
    d = tl.arange(0, DP)
    f = tl.arange(0, FP)
    is0 = (f == 0)[None, :]
    io_mask = (t[:, None] < T) & (d[None, :] < D)
    cm, sm, icr, ici = _dft_tiles(cm_ptr, sm_ptr, icr_ptr, ici_ptr, d, f, DP, FP)
    br, bi, k, v, kr0, ki0, kr, ki, vr, vi, m = _bound_pairs(
        k_ptr + b * s_kb + h * s_kh, v_ptr + b * s_vb + h * s_vh, mask_ptr + b * T, t, d, T, D,
        s_kt, s_vt, cm, sm, is0, HAS_MASK, UNITARY, SOFT2, PREC)
    start = start_ptr + (bh * NB + blk) * 2 * FP
    mr = tl.cumsum(br, axis=0) + tl.load(start + f)[None, :]
    mi = tl.cumsum(bi, axis=0) + tl.load(start + FP + f)[None, :]
    inv_n = 1.0 / tl.maximum(tl.load(n_ptr + b * T + t, mask=t < T, other=1.0), 1.0)
    accr = tl.zeros((BT, FP), dtype=tl.float32)
    acci = tl.zeros((BT, FP), dtype=tl.float32)
    for g in range(G):
        hq = h * G + g
        q = _load_rows(q_ptr + b * s_qb + hq * s_qh, t, s_qt, d, T, D)
        do = _load_rows(do_ptr + b * s_ob + hq * s_oh, t, s_ot, d, T, D) * inv_n[:, None]
        qr0, qi0 = _spectra(q, cm, sm, PREC)
        qr, qi = qr0, qi0
        if UNITARY:
            qr, qi = _unit(qr0, qi0, q, is0, SOFT2)
        gr = tl.dot(do, tl.trans(icr), input_precision=PREC)
        gi = tl.dot(do, tl.trans(ici), input_precision=PREC)
        dmr, dmi = _pmul(qr, qi, gr, gi, is0)
        accr += dmr
        acci += dmi
        dqr, dqi = _pcmul(gr, gi, mr, mi, is0)
        dq = tl.zeros((BT, DP), dtype=tl.float32)
        if UNITARY:
            dqr, dqi, dq = _unit_bwd(qr0, qi0, q, is0, dqr, dqi, SOFT2)
        dq += _to_signal(dqr, dqi, cm, sm, PREC)
        tl.store(dq_ptr + ((b * HKV + h) * G + g) * T * D + t[:, None] * D + d[None, :],
                 dq.to(dq_ptr.dtype.element_ty), mask=io_mask)
    future = future_ptr + (bh * NB + blk) * 2 * FP
    # suffix sums within the block (inclusive) plus everything after it
    dbr = (tl.sum(accr, axis=0)[None, :] - tl.cumsum(accr, axis=0) + accr + tl.load(future + f)[None, :]) * m[:, None]
    dbi = (tl.sum(acci, axis=0)[None, :] - tl.cumsum(acci, axis=0) + acci + tl.load(future + FP + f)[None, :]) * m[:, None]
    dkr, dki = _pcmul(vr, vi, dbr, dbi, is0)
    dvr, dvi = _pcmul(kr, ki, dbr, dbi, is0)
    dk = tl.zeros((BT, DP), dtype=tl.float32)
    if UNITARY:
        dkr, dki, dk = _unit_bwd(kr0, ki0, k, is0, dkr, dki, SOFT2)
    dk += _to_signal(dkr, dki, cm, sm, PREC)
    dv = _to_signal(dvr, dvi, cm, sm, PREC)
    base = (b * HKV + h) * T * D + t[:, None] * D + d[None, :]
    tl.store(dk_ptr + base, dk.to(dk_ptr.dtype.element_ty), mask=io_mask)
    tl.store(dv_ptr + base, dv.to(dv_ptr.dtype.element_ty), mask=io_mask)


_MATRICES: dict = {}


def dft_matrices(d: int, device) -> tuple[torch.Tensor, ...]:
    """Packed real DFT `(DP, FP)` (cos, sin) and inverse `(FP, DP)` matrices, zero-padded to powers of two."""
    key = (d, str(device))
    if key not in _MATRICES:
        dp, fp = triton.next_power_of_2(d), max(16, triton.next_power_of_2(d // 2))
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


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


class _HoloCausal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, counts, init, unitary):
        q, k, v = _rows(q), _rows(k), _rows(v)
        b, hq, t, d = q.shape
        hkv = k.shape[1]
        cm, sm, icr, ici = dft_matrices(d, q.device)
        dp, fp = cm.shape
        bt = token_block(dp, q.dtype)
        nb = triton.cdiv(t, bt)
        consts = dict(DP=dp, FP=fp, BT=bt, UNITARY=unitary, SOFT2=SOFT**2, PREC=dot_precision(q.dtype))
        has_mask = mask is not None
        mask_arg = mask if has_mask else counts  # any float pointer; unread without HAS_MASK
        st = torch.empty(b * hkv, nb, 2, fp, device=q.device, dtype=torch.float32)
        grid = (nb, b * hkv)
        _fwd_state[grid](k, v, mask_arg, cm, sm, st, t, d, hkv, *k.stride()[:3], *v.stride()[:3], nb,
                         HAS_MASK=has_mask, **consts)
        init = init.reshape(b * hkv, 1, 2, fp)
        start = st.cumsum(1).sub_(st).add_(init)
        final = (start[:, -1] + st[:, -1]).view(b, hkv, 2, fp)
        o = torch.empty(b, t, hq, d, device=q.device, dtype=q.dtype)
        _fwd[grid](q, k, v, mask_arg, counts, cm, sm, icr, ici, start, o, t, d, hkv, hq // hkv,
                   *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], o.stride(0), o.stride(2), o.stride(1), nb,
                   HAS_MASK=has_mask, **consts)
        ctx.save_for_backward(q, k, v, mask, counts, start)
        ctx.consts, ctx.has_mask = consts, has_mask
        ctx.mark_non_differentiable(final)
        return o, final

    @staticmethod
    def backward(ctx, do, _dfinal):
        q, k, v, mask, counts, start = ctx.saved_tensors
        b, hq, t, d = q.shape
        hkv = k.shape[1]
        cm, sm, icr, ici = dft_matrices(d, q.device)
        nb, fp = start.shape[1], start.shape[-1]
        do = _rows(do)
        grid = (nb, b * hkv)
        dst = torch.empty_like(start)
        _bwd_state[grid](q, do, counts, cm, sm, icr, ici, dst, t, d, hkv, hq // hkv, *q.stride()[:3],
                         do.stride(0), do.stride(2), do.stride(1), nb,
                         **ctx.consts)
        total = dst.sum(1, keepdim=True)
        future = total - dst.cumsum(1)
        dq = torch.empty(b, hq, t, d, device=q.device, dtype=q.dtype)
        dk = torch.empty(b, hkv, t, d, device=q.device, dtype=k.dtype)
        dv = torch.empty(b, hkv, t, d, device=q.device, dtype=v.dtype)
        _bwd[grid](q, k, v, mask if ctx.has_mask else counts, counts, do, cm, sm, icr, ici, start, future, dq, dk, dv,
                   t, d, hkv, hq // hkv, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
                   do.stride(0), do.stride(2), do.stride(1), nb, HAS_MASK=ctx.has_mask, num_warps=8, **ctx.consts)
        return dq, dk, dv, None, None, total.view(b, hkv, 2, fp), None


def state_width(head_dim: int) -> int:
    """Floats per packed spectrum row the kernels use for `head_dim` (the `FP` of the state `(2, FP)`)."""
    return max(16, triton.next_power_of_2(head_dim // 2))


def holo_causal(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    unitary: bool = True,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Causal holo attention, queries and keys at the same positions.

    q `(B, Hq, T, D)`, k/v `(B, Hkv, T, D)` (any strides with a unit last stride), `key_mask (B, T)` bool
    (True = real token), `init = (memory (B, Hkv, 2, FP) fp32 packed, count (B,))` carried from earlier tokens.
    Returns `out (B, T, Hq, D)` in q's dtype and the final `(memory, count)` (no gradient through it).
    """
    b, hq, t, d = q.shape
    if d % 2 or d > 128 or d < 16:
        raise ValueError(f"holo kernel supports even head_dim in [16, 128], got {d}.")
    fp = state_width(d)
    if init is None:
        mem0 = torch.zeros(b, k.shape[1], 2, fp, device=q.device, dtype=torch.float32)
        n0 = torch.zeros(b, device=q.device, dtype=torch.float32)
    else:
        mem0, n0 = init
    maskf = None if key_mask is None else key_mask.to(torch.float32).contiguous()
    ones = maskf if maskf is not None else torch.ones(b, t, device=q.device, dtype=torch.float32)
    counts = (ones.cumsum(-1) + n0.float()[:, None]).contiguous()
    out, mem = _HoloCausal.apply(q, k, v, maskf, counts, mem0.float(), unitary)
    return out, (mem, counts[:, -1].detach() if t else n0)


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
