"""Performer attention: FAVOR+ positive random features (Choromanski et al. 2021), the linear baseline.

`softmax(q k^T * scaling)` is approximated by `phi(q) phi(k)^T` with
`phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m)`, `x' = x * scaling^(1/2)`, and `W` (m x D) orthogonal Gaussian
features drawn from `config.performer_seed` and the layer index (so every layer differs and a run is
reproducible; change the seed to redraw). `config.performer_num_features` = m (default 256).

Numerics: query features are stabilised by their own row maximum (it cancels in the normalisation); key
features by the data-independent `key_stabiliser(W)`, so no key's scale depends on another token and
causality holds exactly, not just up to rounding.

Paths:
- fused (CUDA, causal, automatic): Triton kernels in `kernel.py` beside this module, same math; see
  docs/kernels.md. A `RecurrentCache` carries the causal state across `generate` steps on either path.
- linear (default): chunked causal prefix sums (intra-chunk dense `C x C`, inter-chunk carried state
  `m x D`), or one sum for encoders. Time O(T * m * D), memory O(T * m + (T / C) * m * D).
- materialised (T5's `position_bias`, explicit 4D masks): `A_ts ∝ phi(q_t).phi(k_s) * exp(bias_ts)`, the
  kernel form of adding the bias to the logits. Time/memory O(T^2).

Left-padded batches: unlike softmax attention under RoPE, performer is not shift-invariant, so a left-padded row
needs `position_ids` counted from its first real token, `(attention_mask.cumsum(-1) - 1).clamp_min(0)`.
`generate()` builds them from the mask; a plain forward must pass them, and warns when it can tell they are
missing (`hf_attn/attention/positions.py`).

Attention dropout (training only) drops whole keys.
"""
from __future__ import annotations

import functools
import math

import torch

from ...cache import RecurrentLayer, recurrent_layer
from ...kernels import kernels_enabled
from ...utils import HfAttnError
from .features import DEFAULT_NUM_FEATURES, feature_map, key_stabiliser, key_stabiliser_value, random_features
from ..common import (
    AttentionCall,
    autocast_entry,
    check_dropout,
    expand_kv,
    group_queries,
    masked_softmax_weights,
    parse_call,
    ungroup,
)
from ..positions import warn_if_left_padded_without_positions

CHUNK = 128


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
    warn_if_left_padded_without_positions("performer", module, call, kwargs)
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
        from .kernel import performer_causal

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
