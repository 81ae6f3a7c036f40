"""Float64 materialised references, one per registered variant (fla's naive.py role).

Each takes `(module, q, k, v, visible, bias, scaling)` with q `(B, Hq, Tq, D)`, k/v `(B, Hkv, Tk, D)`,
`visible` a bool `(B, Hq, Tq, Tk)` mask (causality and padding already folded in), `bias` an additive
`(.., Tq, Tk)` tensor or None, and returns `(B, Tq, Hq, D)` in float64. They share no code with the fast
paths beyond fixed inputs (random feature matrices): loops and explicit DFT/circular index matrices only.
A new variant adds its reference to `REFERENCES`; `test_every_variant_has_reference` enforces it.
"""
from __future__ import annotations

import math

import torch

from hf_attn.attention.performer import DEFAULT_NUM_FEATURES, random_features


def _expand(x, hq):
    return x.repeat_interleave(hq // x.shape[1], dim=1)


def _weights(scores, visible, bias):
    """softmax over visible keys of scores + bias, zero rows where nothing is visible."""
    s = scores + (bias.double() if bias is not None else 0.0)
    s = s.masked_fill(~visible, float("-inf"))
    out = torch.zeros_like(s)
    for idx in torch.nonzero(visible.any(-1)):
        row = s[tuple(idx)]
        out[tuple(idx)] = torch.softmax(row, -1)
    return out


def _dft(d):
    n = torch.arange(d, dtype=torch.float64)
    ang = -2 * math.pi * n[:, None] * n[None, :] / d
    return torch.complex(torch.cos(ang), torch.sin(ang))


def _unitize(x):
    f = _dft(x.shape[-1])
    spec = x.to(torch.complex128) @ f.T
    power = spec.abs() ** 2
    spec = spec / (power + 0.1**2 * power.mean(-1, keepdim=True) + 1e-12).sqrt()  # soft unit magnitude
    return (spec @ f.conj().T).real / x.shape[-1]


def holo_reference(module, q, k, v, visible, bias, scaling):
    q, k, v = q.double(), k.double(), v.double()
    if getattr(getattr(module, "config", None), "holo_unitary", True):
        q, k = _unitize(q), _unitize(k)
    hq, d = q.shape[1], q.shape[-1]
    k, v = _expand(k, hq), _expand(v, hq)
    n = torch.arange(d)
    conv_idx = (n[:, None] - n[None, :]) % d  # (k ⊛ v)[n] = sum_m k[m] v[n - m]
    bound = torch.einsum("bhsm,bhsnm->bhsn", k, v[..., conv_idx])
    w = _weights(torch.zeros(visible.shape, dtype=torch.float64), visible, bias)
    mem = w @ bound
    corr_idx = (n[None, :] + n[:, None]) % d  # (q ⋆ M)[n] = sum_m q[m] M[m + n]
    out = torch.einsum("bhtm,bhtnm->bhtn", q, mem[..., corr_idx])
    return out.transpose(1, 2)


def performer_reference(module, q, k, v, visible, bias, scaling):
    cfg = getattr(module, "config", None)
    m = int(getattr(cfg, "performer_num_features", DEFAULT_NUM_FEATURES))
    seed = int(getattr(cfg, "performer_seed", 0)) + 1009 * int(getattr(module, "layer_idx", 0) or 0)
    d = q.shape[-1]
    w = random_features(d, m, seed, "cpu").double()
    s = (d**-0.5 if scaling is None else scaling) ** 0.5

    def phi(x):
        x = x.double() * s
        return torch.exp(x @ w.T - (x**2).sum(-1, keepdim=True) / 2) / math.sqrt(m)

    hq = q.shape[1]
    kernel = phi(q) @ _expand(phi(k), hq).transpose(-1, -2)
    out = _weights(kernel.log(), visible, bias) @ _expand(v.double(), hq)
    return out.transpose(1, 2)


REFERENCES = {"holo": holo_reference, "performer": performer_reference}


def alibi_reference(q, k, v, scaling, q_offset=0):
    """Causal ALiBi attention (Press et al. 2022) in float64, power-of-two head counts only.

    q `(B, H, Tq, D)`, k/v `(B, Hkv, Tk, D)` without any rotary encoding; score of query i (cache index
    i + q_offset) and key j is `scaling * q.k - 2^(-8(h+1)/H) * (i + q_offset - j)`, keys j > i are hidden.
    Returns `(B, Tq, H, D)`.
    """
    b, h, tq, _ = q.shape
    tk = k.shape[2]
    assert h & (h - 1) == 0, "this reference covers power-of-two head counts"
    k, v = _expand(k.double(), h), _expand(v.double(), h)
    out = torch.zeros(b, h, tq, q.shape[-1], dtype=torch.float64)
    for head in range(h):
        slope = 2.0 ** (-8.0 * (head + 1) / h)
        for i in range(tq):
            pos = i + q_offset
            scores = torch.stack([scaling * (q[:, head, i].double() * k[:, head, j]).sum(-1) - slope * (pos - j)
                                  for j in range(pos + 1)], -1)
            out[:, head, i] = torch.softmax(scores, -1).unsqueeze(1).matmul(v[:, head, : pos + 1]).squeeze(1)
    return out.transpose(1, 2)
