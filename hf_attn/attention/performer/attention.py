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

Window hybrid (`config.hf_attn_window = W > 0`, `attention/window.py`): exact softmax over the last W keys plus
performer over every older key under one normaliser, the older part put on the softmax scale through the
stabilisers (`phi(q).phi(k)` estimates `exp(q'.k' - stab_q - stab_k)`); PyTorch path only.

Learned feature map (Hedgehog, Zhang et al. ICLR 2024): a wrapper may put `features` `(Hkv, m, D)` at
`module.hf_attn_parts` (interface: `attention/common.py`); it replaces the random projection, keeps the positive
form `exp(W x' - |x'|^2/2 - stab)`, and the key stabiliser is recomputed per head from the detached learned W
(so causality stays exact). PyTorch path only: the kernels take one shared projection per layer.

Attention dropout (training only) drops whole keys.
"""
from __future__ import annotations

import dataclasses

import torch

from ...cache import RecurrentLayer, recurrent_layer
from ...kernels import kernels_enabled
from ...utils import HfAttnError
from .features import feature_map, key_stabiliser_value, layer_settings, random_features, stabilised_features
from ..common import (
    AttentionCall,
    autocast_entry,
    check_dropout,
    expand_kv,
    group_queries,
    learned_parts,
    masked_softmax_weights,
    parse_call,
    ungroup,
)
from .. import window as hybrid
from ..positions import warn_if_left_padded_without_positions

CHUNK = 128


def _divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """`num / den` per query; a query that sees no key (den = 0) gets 0 and a zero, not NaN, gradient."""
    seen = den > 0
    return num / torch.where(seen, den, torch.ones_like(den))[..., None] * seen[..., None]


def _global_sums(qf, kf, v, call: AttentionCall, init=None):
    """Every query sees every key (encoders; a one-token decoding step): numerator `(B, Hkv, G, Tq, Dv)`,
    denominator `(B, Hkv, G, Tq)` and the state `(S, z)`, which includes `init`. The sums read only that state, never
    `init` itself: a compiled step that updates the cache in place may write the new state over `init`'s memory
    (inductor in torch 2.11 does)."""
    state = torch.einsum("bhtm,bhtd->bhmd", kf, v)
    norm = kf.sum(2)
    if init is not None:
        state, norm = state + init[0], norm + init[1]
    qg = group_queries(qf, call.groups)
    return torch.einsum("bhgtm,bhmd->bhgtd", qg, state), torch.einsum("bhgtm,bhm->bhgt", qg, norm), (state, norm)


def _causal_sums(qf, kf, v, call: AttentionCall, chunk: int = CHUNK, init=None):
    """Chunked causal prefix form: numerator `(B, Hkv, G, Tq, Dv)`, denominator `(B, Hkv, G, Tq)` and the final
    state `(S (B,Hkv,m,Dv), z (B,Hkv,m))`. `init = (S, z)` is state carried by a `RecurrentCache`.

    One query (a decoding step) is the last and sees every key: `_global_sums`, which reads only the new state.
    """
    if qf.shape[2] == 1:
        return _global_sums(qf, kf, v, call, init)
    off = call.q_offset
    state = torch.einsum("bhtm,bhtd->bhmd", kf[:, :, :off], v[:, :, :off])
    norm = kf[:, :, :off].sum(2)
    if init is not None:
        state, norm = state + init[0], norm + init[1]
    final = (state + torch.einsum("bhtm,bhtd->bhmd", kf[:, :, off:], v[:, :, off:]), norm + kf[:, :, off:].sum(2))
    kf, v = kf[:, :, off:], v[:, :, off:]
    t = kf.shape[2]
    chunk = max(1, min(chunk, t))  # a short call (a decoding step) needs no padding to a full chunk
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
    cut = lambda x: x.reshape(b, hkv, call.groups, n * chunk, *x.shape[5:])[:, :, :, :t]  # noqa: E731
    return cut(num), cut(den), final


def _causal_linear(qf, kf, v, call: AttentionCall, chunk: int = CHUNK, init=None):
    """`_causal_sums` normalised -> `(B, Hkv, G, Tq, Dv)` and the final state."""
    num, den, final = _causal_sums(qf, kf, v, call, chunk, init)
    return _divide(num, den), final


def _global_linear(qf, kf, v, call: AttentionCall):
    """Non-causal (encoder) attention: `_global_sums` normalised -> `(B, Hkv, G, Tq, Dv)`."""
    num, den, _ = _global_sums(qf, kf, v, call)
    return _divide(num, den)


def _cached_state(layer: RecurrentLayer | None):
    return None if layer is None or not layer.has_state() else (layer.state["S"], layer.state["z"])


def _features(module, d: int, m: int, seed: int, hkv: int, device) -> torch.Tensor:
    """The FAVOR+ projection: a wrapper's learned `(Hkv, m', D)` (`hf_attn_parts.features`) or the random `(m, D)`."""
    learned = getattr(learned_parts(module), "features", None)
    if learned is None:
        return random_features(d, m, seed, device)
    if learned.dim() != 3 or learned.shape[0] != hkv or learned.shape[2] != d:
        raise HfAttnError(f"performer: hf_attn_parts.features has shape {tuple(learned.shape)}, expected "
                          f"(key/value heads {hkv}, features, head_dim {d}); wrap the model again with hf_attn.wrap.")
    return learned


def _per_query_head(w: torch.Tensor, groups: int) -> torch.Tensor:
    """Per-key/value-head features `(Hkv, m, D)` repeated for the query heads of each group; `(m, D)` as it is."""
    return w.repeat_interleave(groups, 0) if w.dim() == 3 else w


def _window_hybrid(query, key, value, call: AttentionCall, w, key_stab: float | None, scaling: float,
                   window: hybrid.Window, layer, p: float):
    """Window softmax + performer over the older keys (`attention/window.py`), `(B, Hkv, G, Tq, Dv)`.

    `phi(q).phi(k)` estimates `exp(q'.k' - stab_q - stab_k)` with `q'.k'` the model's logit, so the older part's
    log-mass on the softmax scale is `stab_q + stab_k + log(phi(q).z)`.
    """
    keep = hybrid.key_keep(call, key.shape[0], key.shape[2], key.device)
    key, value, keep, call, base = hybrid.with_buffer(layer, key, value, keep, call)
    sinks = hybrid.find_sinks(layer, key, value, keep, base, window.sinks)
    drop = keep if not p else keep & (torch.rand(key.shape[:3], device=key.device) >= p)
    out_w, mass_w = hybrid.window_softmax(query, key, value, drop, call.q_offset, window.size, scaling, sinks,
                                             base)
    scale = scaling**0.5
    qf, stab_q = stabilised_features(query.float() * scale, _per_query_head(w, call.groups), is_query=True)
    kf, stab_k = stabilised_features(key.float() * scale, w, is_query=False, key_stab=key_stab)
    kf = kf * hybrid.not_sinks(drop, sinks, base)[..., None]
    older = dataclasses.replace(call, key_padding=None)
    shift = lambda x: hybrid.shift_keys(x, window.size)  # noqa: E731
    num, den, final = _causal_sums(qf, shift(kf), shift(value.float()), older, init=_cached_state(layer))
    mass_v = group_queries(stab_q, call.groups)[..., 0] + stab_k + hybrid.safe_log(den)
    if layer is not None:
        buffer = hybrid.buffer_state(layer, key, value, keep, window.size, sinks)
        layer.write_state(S=final[0], z=final[1], **buffer)
    return hybrid.combine(out_w, mass_w, _divide(num, den), mass_v, window.log_mix)


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
    m, seed = layer_settings(module)
    d = query.shape[-1]
    scaling = d**-0.5 if scaling is None else scaling
    scale = scaling**0.5
    w = _features(module, d, m, seed, key.shape[1], query.device)
    key_stab = key_stabiliser_value(d, m, seed) if w.dim() == 2 else None  # random features: a constant
    window = hybrid.window_of("performer", module, query.shape[1], query.device)
    want_map = bool(kwargs.get("output_attentions"))
    layer = recurrent_layer("performer", key, query.shape[2], call.causal and not call.materialised)
    if window is not None:
        hybrid.check_window_call("performer", call, kwargs)
        out = _window_hybrid(query, key, value, call, w, key_stab, scaling, window, layer, p)
        return ungroup(out).to(query.dtype), None
    static_step = layer is not None and layer.decodes_statically(query)  # compiled decoding: PyTorch path
    fused = not static_step and w.dim() == 2 and kernels_enabled(query)  # kernels take one (m, D) projection per layer
    if fused and call.causal and call.q_offset == 0 and not (call.materialised or want_map or p):
        from .kernel import performer_causal

        out, state = performer_causal(query, key, value, w, scale, call.key_padding, _cached_state(layer), key_stab)
        if layer is not None:
            layer.write_state(S=state[0], z=state[1])
        return out, None
    qf = feature_map(query.float() * scale, _per_query_head(w, call.groups), is_query=True)
    kf = feature_map(key.float() * scale, w, is_query=False, key_stab=key_stab)
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
            layer.write_state(S=state[0], z=state[1])
    else:
        out = ungroup(_global_linear(qf, kf, vf, call))
    return out.to(query.dtype), None if weights is None else weights.to(query.dtype)
