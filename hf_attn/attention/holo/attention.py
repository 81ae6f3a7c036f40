"""Holographic (HRR) attention: binding by circular convolution, retrieval by circular correlation.

Each key/value pair is bound into one vector, `K_s * V_s` in the Fourier domain (circular convolution over
head_dim); a query retrieves from the superposed memory by correlation, `o_t = irfft(conj(Q_t) * M_t) / n_t`
(Plate 1995; Hrrformer, Alam et al. 2023). With `config.holo_unitary` (default True) the query and key spectra
are projected to (soft) unit magnitude, so unbinding a stored key returns its value almost exactly; bins weaker
than `config.holo_soft` (default 0.1) x the RMS bin magnitude are damped instead (`math.spectrum`). The floor
sets how much holo amplifies the bf16 rounding of q and k: a larger one gives smaller bf16 errors, a blurrier
unbinding (docs/kernels.md, "bf16 accuracy").

Normalisation: `M_t` is the *mean* of the bound pairs a query may see, `n_t` = number of visible real keys
(causal prefix, padding excluded); a query that sees no key returns zeros.

Paths:
- fused (CUDA, causal, automatic): Triton kernels in `kernel.py` beside this module, same math; see
  docs/kernels.md. A `RecurrentCache` carries the causal state across `generate` steps on either path.
- linear (default): causal prefix sums of the bound spectra (chunked triangular matmuls), or one sum for
  encoders. No `T x T` matrix; time O(T * D^2) with the DFT as a (D x D+2) matmul (tensor cores beat a
  size-64 FFT; O(T * D log D) with an FFT), memory O(T * D). Under a KV cache the prefix before the new queries is summed once.
- materialised (T5 and explicit 4D masks): `M_t = sum_s w_ts K_s V_s` with `w_t = softmax(bias_t)` over
  visible keys, where `bias` is T5's relative `position_bias` (plus any additive mask). This is how holo
  gives T5 its only position signal; with zero bias it is exactly the linear path. Time/memory O(T^2 * D).

Left-padded batches: unlike softmax attention under RoPE, holo is not shift-invariant, so a left-padded row
needs `position_ids` counted from its first real token, `(attention_mask.cumsum(-1) - 1).clamp_min(0)`.
`generate()` builds them from the mask; a plain forward must pass them, and warns when it can tell they are
missing (`hf_attn/attention/positions.py`).

Window hybrid (`config.hf_attn_window = W > 0`, `attention/window.py`): exact softmax over the last W keys (and
the sinks) plus holo over every older key under one normaliser. HRR retrieval has no per-key weights, so the older
keys together weigh as much as the exact ones: holo's share of the output is `gamma / (1 + gamma)` (Liger, Lan et
al. 2025, mixes its window and linear outputs at fixed shares too). Weighing each older key 1 against window
weights `e^{s - max} <= 1` instead let holo's share grow with the context (SmolLM2-135M: perplexity 4,948 with a
64-token window and 4 sinks at gamma 0.1, against 13.9 window-only). PyTorch path only.

Learned binding space: a wrapper may put per-head maps `q_map (Hq, D, Db)`, `k_map (Hkv, D, Db)` at
`module.hf_attn_parts` (interface: `attention/common.py`); queries and keys are mapped into the binding space of
width `Db` (even), values zero-padded to `Db`, and outputs truncated back to `D`. PyTorch path only.

Attention dropout (training only) drops whole bound pairs, the HRR analogue of dropping attention weights.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from ...cache import RecurrentLayer, recurrent_layer
from ...kernels import kernels_enabled
from ...utils import HfAttnError
from .math import SOFT, bind, dft_matrices, spectra, unbind
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


def prefix_sum(x: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Inclusive prefix sum along dim 2 of `(B, H, T, F)`: triangular matmuls within chunks, carries between."""
    b, h, t, f = x.shape
    if t == 1:  # a decoding step: no triangular matmul (on the GPU, three kernels per layer and token)
        return x
    chunk = max(1, min(chunk, t))  # a short call needs no padding to a full chunk
    pad = (-t) % chunk
    xc = torch.nn.functional.pad(x, (0, 0, 0, pad)).view(b, h, -1, chunk, f)
    tril = torch.ones(chunk, chunk, device=x.device, dtype=x.dtype).tril()
    inner = tril @ xc
    totals = inner[:, :, :, -1]
    carry = totals.cumsum(2) - totals
    return (inner + carry[:, :, :, None]).view(b, h, -1, f)[:, :, :t]


def _prefix_memory(kv: torch.Tensor, count: torch.Tensor, call: AttentionCall, init=None):
    """Memory and key count each query sees: `(B, Hkv, Tq or 1, 2F)`, `(B, 1, Tq or 1)`.

    `init = (memory (B, Hkv, 2F), count (B,))` is state carried by a `RecurrentCache`.
    """
    if not call.causal:
        return kv.sum(2, keepdim=True), count.sum(-1, keepdim=True)
    off = call.q_offset
    mem, n = prefix_sum(kv[:, :, off:]), count[..., off:].cumsum(-1)
    if off:
        mem, n = mem + kv[:, :, :off].sum(2, keepdim=True), n + count[..., :off].sum(-1, keepdim=True)
    if init is not None:
        mem, n = mem + init[0][:, :, None], n + init[1].to(n.dtype)[:, None, None]
    return mem, n


def _masked_pairs(kv: torch.Tensor, call: AttentionCall):
    """Bound pairs with padded keys zeroed (never NaN-propagating), and the per-key count `(B, 1, Tk)`."""
    b, _, tk, _ = kv.shape
    if call.key_padding is None:
        return kv, torch.ones(b, 1, tk, device=kv.device)
    kv = torch.where(call.key_padding[:, None, :, None], kv, torch.zeros((), dtype=kv.dtype, device=kv.device))
    return kv, call.key_padding.float()[:, None, :]


def holo_sums(q_spec, kv: torch.Tensor, count: torch.Tensor, call: AttentionCall, init=None):
    """Unnormalised retrieval `unbind(q, M_t)` `(B,Hkv,G,Tq,D)`, the key counts `n_t` `(B,1,Tq)` and the final causal
    state `(memory (B,Hkv,2F), count (B,))`, from bound pairs `kv (B,Hkv,Tk,2F)` already masked and their counts."""
    mem, n = _prefix_memory(kv, count, call, init)
    q = tuple(group_queries(x, call.groups) for x in q_spec)
    return unbind(q, mem[:, :, None]), n, (mem[:, :, -1], n[:, 0, -1])


def holo_linear(q_spec, kv: torch.Tensor, call: AttentionCall, init=None):
    """Linear-time retrieval; `q_spec` `(B,Hq,Tq,F)` pair, bound pairs `kv (B,Hkv,Tk,2F)` -> `(B,Hkv,G,Tq,D)`.

    Also returns the final causal state `(memory (B,Hkv,2F), count (B,))` for a `RecurrentCache`.
    """
    kv, count = _masked_pairs(kv, call)
    out, n, state = holo_sums(q_spec, kv, count, call, init)
    return out / n.clamp_min(1.0)[:, :, None, :, None], state


def contribution_map(q_spec, k_spec, v_spec, weights) -> torch.Tensor:
    """Share of each output's norm contributed by each source pair, `(B, Hq, Tq, Tk)`, rows sum to 1.

    By Parseval, `||irfft(conj(Q_t) K_s V_s)||^2 = sum_f c_f |Q_tf|^2 |K_sf|^2 |V_sf|^2 / D` (c_f = 1 at DC
    and Nyquist, 2 elsewhere), so the map costs one `Tq x Tk` product, not a `Tq x Tk x D` tensor.
    """
    power = lambda s: s[0] ** 2 + s[1] ** 2  # noqa: E731
    nf = q_spec[0].shape[-1]
    d = 2 * (nf - 1)
    c = torch.full((nf,), 2.0, device=weights.device)
    c[0] = c[-1] = 1.0  # DC and Nyquist (head_dim is even)
    groups = q_spec[0].shape[1] // k_spec[0].shape[1]
    src = expand_kv(power(k_spec) * power(v_spec), groups)
    norms = ((power(q_spec) * c) @ src.transpose(-1, -2)).clamp_min(0).sqrt() / d**0.5
    amount = weights * norms
    return amount / amount.sum(-1, keepdim=True).clamp_min(torch.finfo(amount.dtype).tiny)


def _cached_state(layer: RecurrentLayer | None, head_dim: int, packed: bool):
    """A `RecurrentCache` layer's state as `(memory, count)` in the layout one path uses: the PyTorch path's
    `[Re | Im]` `(B, Hkv, 2F)`, or the kernels' packed `(B, Hkv, 2, FP)` (`packed=True`). Each path stores its
    own layout, so a generation served by one path never converts; switching paths mid-way converts once."""
    if layer is None or not layer.has_state():
        return None
    return _in_layout(layer.state, head_dim, packed)


def _in_layout(state: dict, head_dim: int, packed: bool):
    """`(memory, count)` of `state` (either path's layout) in the packed or the `[Re | Im]` layout."""
    if packed == ("packed" in state):
        return state["packed" if packed else "memory"], state["count"]
    from . import kernel as kt

    if packed:
        re, im = state["memory"].chunk(2, dim=-1)
        return kt.pack_spectrum(torch.complex(re, im), kt.state_width(head_dim)), state["count"]
    spec = kt.unpack_spectrum(state["packed"], head_dim)
    return torch.cat([spec.real, spec.imag], -1), state["count"]


def _holo_kernel(query, key, value, call: AttentionCall, project: bool, soft: float, layer: RecurrentLayer | None):
    """The fused Triton path (CUDA): same math, state carried in the kernels' packed layout."""
    from . import kernel as kt

    init = _cached_state(layer, query.shape[-1], packed=True)
    out, (mem, n) = kt.holo_causal(query, key, value, call.key_padding, init, project, soft)
    if layer is not None and layer.static:  # its compiled decoding steps run the PyTorch path: convert once here
        mem, n = _in_layout({"packed": mem, "count": n}, query.shape[-1], packed=False)
        layer.write_state(memory=mem, count=n)
        dft_matrices(query.shape[-1], str(query.device))  # made here, eagerly: not inside the steps' CUDA graph
    elif layer is not None:
        layer.write_state(packed=mem, count=n)
    return out


def _binding_inputs(module, query, key, value):
    """q, k, v in the binding space: a wrapper's per-head maps `hf_attn_parts.q_map (Hq,D,Db)`, `k_map (Hkv,D,Db)`
    applied to q and k and v zero-padded to `Db`; without learned parts, the inputs as they are."""
    parts = learned_parts(module)
    q_map, k_map = getattr(parts, "q_map", None), getattr(parts, "k_map", None)
    if q_map is None or k_map is None:
        return query, key, value
    d = query.shape[-1]
    fits = q_map.shape[:2] == (query.shape[1], d) and k_map.shape[:2] == (key.shape[1], d)
    if not fits or q_map.shape[2] != k_map.shape[2]:
        raise HfAttnError(f"holo: hf_attn_parts.q_map {tuple(q_map.shape)} / k_map {tuple(k_map.shape)} do not fit "
                          f"{query.shape[1]} query and {key.shape[1]} key/value heads of head_dim {d}; wrap the model "
                          "again with hf_attn.wrap.")
    dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    q = torch.einsum("bhtd,hde->bhte", query.to(dtype), q_map.to(dtype))
    k = torch.einsum("bhtd,hde->bhte", key.to(dtype), k_map.to(dtype))
    return q, k, torch.nn.functional.pad(value.to(dtype), (0, q_map.shape[2] - d))


def _window_hybrid(module, query, key, value, call: AttentionCall, scaling: float, window: hybrid.Window, layer,
                   p: float, project: bool, soft: float):
    """Window softmax + holo over the older keys (`attention/window.py`), `(B, Hkv, G, Tq, D)`.

    holo's older part is the mean retrieval `unbind(q_t, mean of older bound pairs)`, and the older keys together
    weigh as much as the exact ones (`DEN_t` = the exact part's mass), so the variant's share of the output is
    `gamma / (1 + gamma)` wherever older keys exist.
    """
    d = query.shape[-1]
    keep = hybrid.key_keep(call, key.shape[0], key.shape[2], key.device)
    key, value, keep, call, base = hybrid.with_buffer(layer, key, value, keep, call)
    sinks = hybrid.find_sinks(layer, key, value, keep, base, window.sinks)
    drop = keep if not p else keep & (torch.rand(key.shape[:3], device=key.device) >= p)
    out_w, mass_w = hybrid.window_softmax(query, key, value, drop, call.q_offset, window.size, scaling, sinks, base)
    q, k, v = _binding_inputs(module, query, key, value)
    older_keep = hybrid.not_sinks(keep, sinks, base)  # the keys the variant covers (once shifted past the window)
    q_spec, k_spec, v_spec = spectra(q, k, v, project, soft)
    kv = bind(k_spec, v_spec) * (older_keep & drop)[..., None]
    older = dataclasses.replace(call, key_padding=None)
    shift = lambda x: hybrid.shift_keys(x, window.size)  # noqa: E731
    init = _cached_state(layer, q.shape[-1], packed=False)
    num, n, state = holo_sums(q_spec, shift(kv), shift(older_keep.float()), older, init)
    if layer is not None:
        buffer = hybrid.buffer_state(layer, key, value, keep, window.size, sinks)
        layer.write_state(memory=state[0], count=state[1], **buffer)
    out_v = num[..., :d] / n.clamp_min(1.0)[:, :, None, :, None]
    mass_v = torch.where(n[:, :, None] > 0, mass_w, -math.inf)  # the older keys together weigh as the exact ones
    return hybrid.combine(out_w, mass_w, out_v, mass_v, window.log_mix)


def _projection(module) -> tuple[bool, float]:
    """`(holo_unitary, holo_soft)` from the module's config: whether q/k spectra are projected to unit magnitude,
    and the projection's floor as a fraction of the RMS bin magnitude."""
    config = getattr(module, "config", None)
    soft = getattr(config, "holo_soft", SOFT)
    if isinstance(soft, bool) or not isinstance(soft, (int, float)) or not 0 < soft < float("inf"):
        raise HfAttnError(f"holo: config.holo_soft must be a positive number (the unit projection's floor as a "
                          f"fraction of the RMS bin magnitude), got {soft!r}; set it to e.g. {SOFT} (the default).")
    return bool(getattr(config, "holo_unitary", True)), float(soft)


@autocast_entry
def holo_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers attention function for `attn_implementation="holo"`; `scaling` is used only by the window
    softmax of a hybrid (HRR has no logits).

    Returns `(out (B, Tq, Hq, D), weights or None)`; weights are the contribution map when
    `output_attentions=True`.
    """
    call = parse_call("holo", module, query, key, value, attention_mask, kwargs)
    warn_if_left_padded_without_positions("holo", module, call, kwargs)
    if key.shape[-1] != value.shape[-1]:
        raise HfAttnError(f"holo binds keys with values by circular convolution: key head_dim {key.shape[-1]} "
                         f"must equal value head_dim {value.shape[-1]}.")
    if query.shape[-1] % 2:
        raise HfAttnError(
            f"holo needs an even head_dim (its real spectra pair DC with a Nyquist bin); this model has "
            f"head_dim {query.shape[-1]}. Use 'performer' for this model."
        )
    p = check_dropout("holo", dropout, module)
    project, soft = _projection(module)
    want_map = bool(kwargs.get("output_attentions"))
    layer = recurrent_layer("holo", key, query.shape[2], call.causal and not call.materialised)
    window = hybrid.window_of("holo", module, query.shape[1], query.device)
    if window is not None:
        hybrid.check_window_call("holo", call, kwargs)
        scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
        out = _window_hybrid(module, query, key, value, call, scaling, window, layer, p, project, soft)
        return ungroup(out).to(query.dtype), None
    d = query.shape[-1]
    static_step = layer is not None and layer.decodes_statically(query)  # compiled decoding: PyTorch path
    fused = (not static_step and learned_parts(module) is None  # the kernels bind raw q/k/v
             and query.shape[-1] % 2 == 0 and kernels_enabled(query))  # packed spectra need an even head_dim
    if fused and call.causal and call.q_offset == 0 and not (call.materialised or want_map or p):
        return _holo_kernel(query, key, value, call, project, soft, layer), None
    q, k, v = _binding_inputs(module, query, key, value)
    q_spec, k_spec, v_spec = spectra(q, k, v, project, soft)
    kv = bind(k_spec, v_spec)
    if p:
        kv = kv * (torch.rand(kv.shape[:3] + (1,), device=kv.device) >= p)
    weights = None
    if call.materialised or want_map:
        b, hq, tq, _ = query.shape
        w = masked_softmax_weights(call, torch.zeros(b, hq, tq, key.shape[2], device=query.device))
    if call.materialised:
        out = unbind(q_spec, w @ expand_kv(kv, call.groups)).transpose(1, 2).contiguous()
    else:
        out, state = holo_linear(q_spec, kv, call, _cached_state(layer, q.shape[-1], packed=False))
        out = ungroup(out)
        if layer is not None:
            layer.write_state(memory=state[0], count=state[1])
    if want_map:
        weights = contribution_map(q_spec, k_spec, v_spec, w).to(query.dtype)
    return out[..., :d].to(query.dtype), weights
