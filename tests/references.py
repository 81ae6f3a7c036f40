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

from hf_attn.attention.performer.features import DEFAULT_NUM_FEATURES, KEY_FLOOR, random_features
from hf_attn.attention.gauge import settings_from_config, wigner_d


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


def _unitize(x, soft: float = 0.1):
    f = _dft(x.shape[-1])
    spec = x.to(torch.complex128) @ f.T
    power = spec.abs() ** 2
    spec = spec / (power + soft**2 * power.mean(-1, keepdim=True) + 1e-12).sqrt()  # soft unit magnitude
    return (spec @ f.conj().T).real / x.shape[-1]


def _parts(module):
    return getattr(module, "hf_attn_parts", None)


def _head_map(x, w):
    """`x (B, H, T, D) @ w[h] (D, E)` per head, float64."""
    return torch.einsum("bhtd,hde->bhte", x, w.double())


def _window_split(module, visible, hq):
    """`(size, gamma (1, Hq, 1, 1), exact mask, older mask)`; size 0 means no window (masks None). The exact part
    is the last `size` keys plus the sinks (the row's first `hf_attn_window_sinks` real keys)."""
    cfg = getattr(module, "config", None)
    size = getattr(cfg, "hf_attn_window", 0) or 0
    if not size:
        return 0, None, None, None
    logit = getattr(_parts(module), "window_mix_logit", None)
    if logit is not None:
        gamma = torch.sigmoid(logit.detach().double())
    else:
        gamma = torch.full((hq,), float(getattr(cfg, "hf_attn_window_mix", 0.1)), dtype=torch.float64)
    tq, tk = visible.shape[-2:]
    position = torch.arange(tq)[:, None] + tk - tq  # causal self-attention: query i sits at key position tk - tq + i
    recent = torch.arange(tk)[None, :] > position - size
    real = visible.any(-2, keepdim=True)  # keys some query sees: the row's real tokens
    sink = real & (real.cumsum(-1) <= (getattr(cfg, "hf_attn_window_sinks", 0) or 0))  # its first S real tokens
    return size, gamma.view(1, hq, 1, 1), visible & (recent | sink), visible & ~recent & ~sink


def _hybrid(window_weights, v, lin_num, lin_den, gamma):
    """`(W @ v + gamma LIN) / (sum W + gamma DEN)`; rows with nothing visible are 0."""
    num = window_weights @ v + gamma * lin_num
    den = window_weights.sum(-1, keepdim=True) + gamma * lin_den[..., None]
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)


def _logits(q, k, scaling):
    return (q.double() @ _expand(k.double(), q.shape[1]).transpose(-1, -2)) * (q.shape[-1] ** -0.5 if scaling is None
                                                                              else scaling)


def holo_reference(module, q, k, v, visible, bias, scaling):
    """HRR retrieval; with `hf_attn_parts` q/k mapped per head into the binding space (v zero-padded, output
    truncated); with `hf_attn_window` the window hybrid (window weights e^{s - max}; the older keys, equally weighted,
    together weigh as much as the window's)."""
    d = q.shape[-1]
    hq = q.shape[1]
    size, gamma, recent, older = _window_split(module, visible, hq)
    raw_q, raw_k, raw_v = q.double(), k.double(), v.double()
    q, k, v = raw_q, raw_k, raw_v
    parts = _parts(module)
    if getattr(parts, "q_map", None) is not None:
        q, k = _head_map(q, parts.q_map.detach()), _head_map(k, parts.k_map.detach())
        v = torch.nn.functional.pad(v, (0, q.shape[-1] - d))
    config = getattr(module, "config", None)
    if getattr(config, "holo_unitary", True):
        soft = getattr(config, "holo_soft", 0.1)
        q, k = _unitize(q, soft), _unitize(k, soft)
    db = q.shape[-1]
    k, v = _expand(k, hq), _expand(v, hq)
    n = torch.arange(db)
    conv_idx = (n[:, None] - n[None, :]) % db  # (k ⊛ v)[n] = sum_m k[m] v[n - m]
    bound = torch.einsum("bhsm,bhsnm->bhsn", k, v[..., conv_idx])
    corr_idx = (n[None, :] + n[:, None]) % db  # (q ⋆ M)[n] = sum_m q[m] M[m + n]
    retrieve = lambda mem: torch.einsum("bhtm,bhtnm->bhtn", q, mem[..., corr_idx])[..., :d]  # noqa: E731
    if not size:
        w = _weights(torch.zeros(visible.shape, dtype=torch.float64), visible, bias)
        return retrieve(w @ bound).transpose(1, 2)
    s = _logits(raw_q, raw_k, scaling).masked_fill(~recent, float("-inf"))
    peak = s.amax(-1, keepdim=True).clamp_min(-1e300)
    window_weights = torch.exp(s - peak).masked_fill(~recent, 0.0)
    n, exact_mass = older.double().sum(-1), window_weights.sum(-1)
    weight = torch.where(n > 0, exact_mass / n.clamp_min(1), 0.0)  # the older keys together weigh as the exact ones
    lin = retrieve((older.double() * weight[..., None]) @ bound)
    return _hybrid(window_weights, _expand(raw_v, hq), lin, weight * n, gamma).transpose(1, 2)


def performer_reference(module, q, k, v, visible, bias, scaling):
    """FAVOR+ kernel weights; with `hf_attn_parts.features` one learned projection per key/value head; with
    `hf_attn_window` the window hybrid (window weights e^{s}, older keys phi(q).phi(k), both estimates of e^{s})."""
    cfg = getattr(module, "config", None)
    m = int(getattr(cfg, "performer_num_features", DEFAULT_NUM_FEATURES))
    seed = int(getattr(cfg, "performer_seed", 0)) + 1009 * int(getattr(module, "layer_idx", 0) or 0)
    d, hq, hkv = q.shape[-1], q.shape[1], k.shape[1]
    learned = getattr(_parts(module), "features", None)
    w = (random_features(d, m, seed, "cpu") if learned is None else learned.detach()).double().to(q.device)
    w_k = w.expand(hkv, *w.shape[-2:])
    w_q = w_k.repeat_interleave(hq // hkv, 0)
    s = (d**-0.5 if scaling is None else scaling) ** 0.5

    def phi(x, w_heads, floor=-math.inf):
        x = x.double() * s
        log_f = torch.einsum("bhtd,hmd->bhtm", x, w_heads) - (x**2).sum(-1, keepdim=True) / 2
        return torch.exp(log_f.clamp_min(floor)) / math.sqrt(w_heads.shape[1])

    # keys' log-features are floored at KEY_FLOOR below max_i |W_i|^2 / 4 (one constant per key/value head)
    key_floor = (w_k.norm(dim=-1) ** 2).amax(-1).view(1, hkv, 1, 1) / 4 + KEY_FLOOR
    kernel = phi(q, w_q) @ _expand(phi(k, w_k, key_floor), hq).transpose(-1, -2)
    size, gamma, recent, older = _window_split(module, visible, hq)
    if not size:
        out = _weights(kernel.log(), visible, bias) @ _expand(v.double(), hq)
        return out.transpose(1, 2)
    window_weights = torch.exp(_logits(q, k, scaling)).masked_fill(~recent, 0.0)
    old = kernel.masked_fill(~older, 0.0)
    vv = _expand(v.double(), hq)
    return _hybrid(window_weights, vv, old @ vv, old.sum(-1), gamma).transpose(1, 2)


def _frames(phi, layout):
    """Per-token block-diagonal rotation `(B, H, T, D, D)` (identity when phi is None)."""
    d = layout.head_dim
    if phi is None:
        return None
    blocks = [wigner_d(phi.double(), b.l) if b.l else torch.eye(b.dim, dtype=torch.float64).expand(*phi.shape[:-1], b.dim, b.dim)
              for b in layout.blocks]
    out = torch.zeros(*phi.shape[:-1], d, d, dtype=torch.float64)
    for b, m in zip(layout.blocks, blocks):
        out[..., b.start : b.stop, b.start : b.stop] = m
    return out


def gauge_reference(module, q, k, v, visible, bias, scaling, phi_q=None, phi_k=None, var_q=None, var_k=None):
    """softmax(-KL(N(q_i, S_i) || Omega_ij N(k_j, S_j)) / kappa) with full covariance matrices.

    Variances default to the config's per-block values; `var_q`/`var_k` are per-dimension `(B, H, T, D)`.
    Without frames: the textbook diagonal-Gaussian KL summed over dimensions. With frames: `Omega_ij =
    R_i R_j^T` as a D x D matrix, transported covariance `Omega diag(v_j) Omega^T`, KL by inverse and slogdet.
    """
    settings = settings_from_config(getattr(module, "config", None), q.shape[-1], scaling)
    hq, d = q.shape[1], q.shape[-1]
    per_dim = torch.tensor([settings.variance[i] for i in settings.layout.block_of_dim()], dtype=torch.float64)
    vq = per_dim.expand(q.shape) if var_q is None else var_q.double()
    vk = per_dim.expand(k.shape) if var_k is None else var_k.double()
    q, k, vk = q.double(), _expand(k.double(), hq), _expand(vk, hq)
    rq, rk = _frames(phi_q, settings.layout), _frames(phi_k, settings.layout)
    if rq is None and rk is None:
        qi, qv = q[:, :, :, None, :], vq[:, :, :, None, :]
        kj, kv = k[:, :, None, :, :], vk[:, :, None, :, :]
        kl = 0.5 * (qv / kv + (kj - qi) ** 2 / kv - 1 + kv.log() - qv.log()).sum(-1)
    else:
        eye = torch.eye(d, dtype=torch.float64)
        rq = eye.expand(*q.shape[:3], d, d) if rq is None else rq
        rk = eye.expand(*k.shape[:3], d, d) if rk is None else _expand(rk, hq)
        omega = rq[:, :, :, None] @ rk[:, :, None].transpose(-1, -2)  # (B, H, Tq, Tk, D, D)
        mean = (omega @ k[:, :, None, :, :, None])[..., 0]
        cov = omega @ torch.diag_embed(vk)[:, :, None] @ omega.transpose(-1, -2)
        inv = torch.linalg.inv(cov)
        diff = (mean - q[:, :, :, None, :])[..., None]
        trace = torch.diagonal(inv @ torch.diag_embed(vq)[:, :, :, None], dim1=-2, dim2=-1).sum(-1)
        maha = (diff.transpose(-1, -2) @ inv @ diff)[..., 0, 0]
        kl = 0.5 * (trace + maha - d + torch.linalg.slogdet(cov)[1] - vq.log().sum(-1)[..., None])
    w = _weights(-kl / settings.kappa, visible, bias)
    return (w @ _expand(v.double(), hq)).transpose(1, 2)


REFERENCES = {"holo": holo_reference, "performer": performer_reference, "gauge": gauge_reference}


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
