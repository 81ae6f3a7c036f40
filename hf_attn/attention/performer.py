"""Performer attention: FAVOR+ positive random features (Choromanski et al. 2021), the linear baseline.

`softmax(q k^T * scaling)` is approximated by `phi(q) phi(k)^T` with
`phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m)`, `x' = x * scaling^(1/2)`, and `W` (m x D) orthogonal Gaussian
features drawn from `config.performer_seed` and the layer index (so every layer differs and a run is
reproducible; change the seed to redraw). `config.performer_num_features` = m (default 256).

Numerics: query features are stabilised by their own row maximum (it cancels in the normalisation); key
features by the data-independent `key_stabiliser(W)`, so no key's scale depends on another token and
causality holds exactly, not just up to rounding.

Paths:
- fused (CUDA, causal, automatic): Triton kernels in `hf_attn/kernels/performer_triton.py`, same math; see
  docs/kernels.md. A `RecurrentCache` carries the causal state across `generate` steps on either path.
- linear (default): chunked causal prefix sums (intra-chunk dense `C x C`, inter-chunk carried state
  `m x D`), or one sum for encoders. Time O(T * m * D), memory O(T * m + (T / C) * m * D).
- materialised (T5's `position_bias`, explicit 4D masks): `A_ts ∝ phi(q_t).phi(k_s) * exp(bias_ts)`, the
  kernel form of adding the bias to the logits. Time/memory O(T^2).

Attention dropout (training only) drops whole keys.
"""
from __future__ import annotations

import functools
import math

import torch

from ..cache import RecurrentLayer, recurrent_layer
from ..kernels import kernels_enabled
from ..utils import HfAttnError
from .common import (
    AttentionCall,
    autocast_entry,
    check_dropout,
    expand_kv,
    group_queries,
    masked_softmax_weights,
    parse_call,
    ungroup,
)

DEFAULT_NUM_FEATURES = 256
CHUNK = 128


@functools.lru_cache(maxsize=256)
def _features_cpu(head_dim: int, num_features: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(math.ceil(num_features / head_dim)):
        q, _ = torch.linalg.qr(torch.randn(head_dim, head_dim, generator=gen, dtype=torch.float64))
        blocks.append(q.T)
    w = torch.cat(blocks)[:num_features]
    norms = torch.randn(num_features, head_dim, generator=gen, dtype=torch.float64).norm(dim=1, keepdim=True)
    return (w * norms).float()


@functools.lru_cache(maxsize=256)
def random_features(head_dim: int, num_features: int, seed: int, device) -> torch.Tensor:
    """Orthogonal random features `(m, D)`, deterministic in `(head_dim, m, seed)`; kept per device, so a
    forward uploads nothing (an upload per call also cannot be captured in a CUDA graph). Read-only."""
    return _features_cpu(head_dim, num_features, seed).to(device)


@functools.lru_cache(maxsize=256)
def key_stabiliser_value(head_dim: int, num_features: int, seed: int) -> float:
    """`key_stabiliser` of those features as a float, computed once on the CPU (no device sync per call)."""
    return float(key_stabiliser(_features_cpu(head_dim, num_features, seed)))


def key_stabiliser(w: torch.Tensor) -> torch.Tensor:
    """`c = max_i |W_i|^2 / 4`, subtracted from every key's log-features.

    `W_i.x - |x|^2/2 <= |W_i|^2 / 2 = 2c` for any x, so features stay below `e^c` (no overflow), and typical
    keys (log-features near 0) sit ~c nats above underflow (c ~ 44 at head_dim 128, where the bound `2c` itself
    left them below fp32's smallest normal). It depends on no token, so causality is exact.
    """
    return (w.double().norm(dim=-1) ** 2).max().float() / 4


def feature_map(x: torch.Tensor, w: torch.Tensor, is_query: bool) -> torch.Tensor:
    """Positive features of `x (..., D)` already scaled by `scaling^(1/2)`.

    A query's features are divided by their largest value (a per-query constant, which cancels between the
    numerator and the denominator exactly), so the largest is 1/sqrt(m) whatever |q| is. Stabilising by the
    projection alone left `exp(-|q|^2/2)` in, and SmolLM2's queries (|q|^2/2 ~ 60 after scaling) then gave
    denominators of 1e-43 and infinite gradients in the first steps of a recovery fine-tune.
    """
    proj = x @ w.T
    log_f = proj - x.pow(2).sum(-1, keepdim=True) / 2
    stab = log_f.amax(-1, keepdim=True).detach() if is_query else key_stabiliser(w)
    return torch.exp(log_f - stab) / math.sqrt(w.shape[0])


def _divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """`num / den` per query; a query that sees no key (den = 0) gets 0 and a zero, not NaN, gradient."""
    seen = den > 0
    return num / torch.where(seen, den, torch.ones_like(den))[..., None] * seen[..., None]


def _causal_linear(qf, kf, v, call: AttentionCall, chunk: int = CHUNK, init=None):
    """Chunked causal prefix form -> `(B, Hkv, G, Tq, Dv)` and the final state `(S (B,Hkv,m,Dv), z (B,Hkv,m))`.

    `init = (S, z)` is state carried by a `RecurrentCache`.
    """
    off = call.q_offset
    state = torch.einsum("bhtm,bhtd->bhmd", kf[:, :, :off], v[:, :, :off])
    norm = kf[:, :, :off].sum(2)
    if init is not None:
        state, norm = state + init[0], norm + init[1]
    final = (state + torch.einsum("bhtm,bhtd->bhmd", kf[:, :, off:], v[:, :, off:]), norm + kf[:, :, off:].sum(2))
    kf, v = kf[:, :, off:], v[:, :, off:]
    t = kf.shape[2]
    pad = (-t) % chunk
    if pad:
        qf, kf, v = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (qf, kf, v))
    n = (t + pad) // chunk
    b, hkv, _, m = kf.shape
    kc = kf.view(b, hkv, n, chunk, m)
    vc = v.reshape(b, hkv, n, chunk, -1)
    qc = group_queries(qf, call.groups).reshape(b, hkv, call.groups, n, chunk, m)
    kv = torch.einsum("bhncm,bhncd->bhnmd", kc, vc)
    states = kv.cumsum(2) - kv + state[:, :, None]
    zc = kc.sum(3)
    norms = zc.cumsum(2) - zc + norm[:, :, None]
    tril = torch.ones(chunk, chunk, device=qf.device).tril()
    a = torch.einsum("bhgncm,bhnsm->bhgncs", qc, kc) * tril
    num = torch.einsum("bhgncm,bhnmd->bhgncd", qc, states) + torch.einsum("bhgncs,bhnsd->bhgncd", a, vc)
    den = torch.einsum("bhgncm,bhnm->bhgnc", qc, norms) + a.sum(-1)
    return _divide(num, den).reshape(b, hkv, call.groups, n * chunk, -1)[:, :, :, :t], final


def _global_linear(qf, kf, v, call: AttentionCall) -> torch.Tensor:
    state = torch.einsum("bhtm,bhtd->bhmd", kf, v)
    norm = kf.sum(2)
    qg = group_queries(qf, call.groups)
    num = torch.einsum("bhgtm,bhmd->bhgtd", qg, state)
    den = torch.einsum("bhgtm,bhm->bhgt", qg, norm)
    return _divide(num, den)


def _cached_state(layer: RecurrentLayer | None):
    return None if layer is None or not layer.state else (layer.state["S"], layer.state["z"])


@autocast_entry
def performer_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers attention function for `attn_implementation="performer"`.

    Returns `(out (B, Tq, Hq, Dv), weights or None)`; weights (the normalised kernel matrix) only with
    `output_attentions=True`.
    """
    call = parse_call("performer", module, query, key, value, attention_mask, kwargs)
    p = check_dropout("performer", dropout, module)
    cfg = getattr(module, "config", None)
    m = int(getattr(cfg, "performer_num_features", DEFAULT_NUM_FEATURES))
    if m < 1:
        raise ValueError(f"performer: config.performer_num_features must be >= 1, got {m}.")
    seed = int(getattr(cfg, "performer_seed", 0)) + 1009 * int(getattr(module, "layer_idx", 0) or 0)
    d = query.shape[-1]
    scale = (d**-0.5 if scaling is None else scaling) ** 0.5
    w = random_features(d, m, seed, query.device)
    want_map = bool(kwargs.get("output_attentions"))
    layer = recurrent_layer("performer", key, query.shape[2], call.causal and not call.materialised)
    if kernels_enabled(query) and call.causal and call.q_offset == 0 and not (call.materialised or want_map or p):
        from ..kernels.performer_triton import performer_causal

        out, state = performer_causal(query, key, value, w, scale, call.key_padding, _cached_state(layer),
                                      key_stabiliser_value(d, m, seed))
        if layer is not None:
            layer.state = {"S": state[0], "z": state[1]}
        return out, None
    qf = feature_map(query.float() * scale, w, is_query=True)
    kf = feature_map(key.float() * scale, w, is_query=False)
    vf = value.float()
    if call.key_padding is not None:
        kf = kf * call.key_padding[:, None, :, None]
    if p:
        kf = kf * (torch.rand(kf.shape[:3] + (1,), device=kf.device) >= p)
    weights = None
    if call.materialised or want_map:
        raw = qf @ expand_kv(kf, call.groups).transpose(-1, -2)
        weights = masked_softmax_weights(call, raw.clamp_min(torch.finfo(raw.dtype).tiny).log())
    if call.materialised:
        out = (weights @ expand_kv(vf, call.groups)).transpose(1, 2).contiguous()
    elif call.causal:
        out, state = _causal_linear(qf, kf, vf, call, init=_cached_state(layer))
        out = ungroup(out)
        if layer is not None:
            layer.state = {"S": state[0], "z": state[1]}
    else:
        out = ungroup(_global_linear(qf, kf, vf, call))
    return out.to(query.dtype), None if weights is None else weights.to(query.dtype)
