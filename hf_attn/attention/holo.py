"""Holographic (HRR) attention: binding by circular convolution, retrieval by circular correlation.

Each key/value pair is bound into one vector, `K_s * V_s` in the Fourier domain (circular convolution over
head_dim); a query retrieves from the superposed memory by correlation, `o_t = irfft(conj(Q_t) * M_t) / n_t`
(Plate 1995; Hrrformer, Alam et al. 2023). With `config.holo_unitary` (default True) the query and key spectra
are projected to (soft) unit magnitude, so unbinding a stored key returns its value almost exactly.

Normalisation: `M_t` is the *mean* of the bound pairs a query may see, `n_t` = number of visible real keys
(causal prefix, padding excluded); a query that sees no key returns zeros.

Paths:
- fused (CUDA, causal, automatic): Triton kernels in `hf_attn/kernels/holo_triton.py`, same math; see
  docs/kernels.md. A `RecurrentCache` carries the causal state across `generate` steps on either path.
- linear (default): causal prefix sums of the bound spectra, or one sum for encoders. No `T x T` matrix;
  time O(T * D log D), memory O(T * D). Under a KV cache the prefix before the new queries is summed once.
- materialised (T5 and explicit 4D masks): `M_t = sum_s w_ts K_s V_s` with `w_t = softmax(bias_t)` over
  visible keys, where `bias` is T5's relative `position_bias` (plus any additive mask). This is how holo
  gives T5 its only position signal; with zero bias it is exactly the linear path. Time/memory O(T^2 * D).

Attention dropout (training only) drops whole bound pairs, the HRR analogue of dropping attention weights.
"""
from __future__ import annotations

import torch

from ..utils import HfAttnError
from ..cache import RecurrentLayer, recurrent_layer
from ..kernels import kernels_enabled
from .common import (
    AttentionCall,
    check_dropout,
    expand_kv,
    group_queries,
    masked_softmax_weights,
    parse_call,
    ungroup,
)

SOFT = 0.1  # bins weaker than SOFT x the vector's RMS bin magnitude are damped, not blown up to unit size


def unitary(spec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Project spectra `X = rfft(x)` to (soft) unit magnitude: `X / sqrt(|X|^2 + SOFT^2 * |x|^2)`.

    `|x|^2` is the mean bin power of the full spectrum (Parseval).

    A hard `X / |X|` gives a near-empty bin a phase set by rounding noise (bf16 logits then drift by 30%
    on small models); the soft floor keeps bins at >= the RMS magnitude within 0.5% of unit size.
    """
    power = spec.real**2 + spec.imag**2
    floor = SOFT**2 * x.float().square().sum(-1, keepdim=True) + 1e-12
    return spec * torch.rsqrt(power + floor)


def _spectra(query, key, value, project: bool):
    q, k, v = (torch.fft.rfft(x.float(), dim=-1) for x in (query, key, value))
    if project:
        q, k = unitary(q, query), unitary(k, key)
    return q, k, v


def _prefix_memory(kv: torch.Tensor, count: torch.Tensor, call: AttentionCall, init=None):
    """Memory and key count each query sees: `(B, Hkv, Tq or 1, F)`, `(B, 1, Tq or 1)`.

    `init = (memory (B, Hkv, F) complex, count (B,))` is state carried by a `RecurrentCache`.
    """
    if not call.causal:
        return kv.sum(2, keepdim=True), count.sum(-1, keepdim=True)
    off = call.q_offset
    mem = kv[:, :, off:].cumsum(2) + kv[:, :, :off].sum(2, keepdim=True)
    n = count[..., off:].cumsum(-1) + count[..., :off].sum(-1, keepdim=True)
    if init is not None:
        mem, n = mem + init[0][:, :, None], n + init[1].to(n.dtype)[:, None, None]
    return mem, n


def _masked_pairs(kv: torch.Tensor, call: AttentionCall):
    """Bound pairs with padded keys zeroed, and the per-key count `(B, 1, Tk)`."""
    b, _, tk, _ = kv.shape
    if call.key_padding is None:
        return kv, torch.ones(b, 1, tk, device=kv.device)
    kv = torch.where(call.key_padding[:, None, :, None], kv, torch.zeros((), dtype=kv.dtype, device=kv.device))
    return kv, call.key_padding.float()[:, None, :]


def holo_linear(q_spec, kv, call: AttentionCall, head_dim: int, init=None):
    """Linear-time retrieval; `q_spec (B,Hq,Tq,F)`, bound pairs `kv (B,Hkv,Tk,F)` -> `(B,Hkv,G,Tq,D)`.

    Also returns the final causal state `(memory (B,Hkv,F), count (B,))` for a `RecurrentCache`.
    """
    kv, count = _masked_pairs(kv, call)
    mem, n = _prefix_memory(kv, count, call, init)
    out = torch.fft.irfft(group_queries(q_spec, call.groups).conj() * mem[:, :, None], n=head_dim, dim=-1)
    return out / n.clamp_min(1.0)[:, :, None, :, None], (mem[:, :, -1], n[:, 0, -1])


def contribution_map(q_spec, k_spec, v_spec, weights) -> torch.Tensor:
    """Share of each output's norm contributed by each source pair, `(B, Hq, Tq, Tk)`, rows sum to 1.

    By Parseval, `||irfft(conj(Q_t) K_s V_s)||^2 = sum_f c_f |Q_tf|^2 |K_sf|^2 |V_sf|^2 / D` (c_f = 1 at DC
    and Nyquist, 2 elsewhere), so the map costs one `Tq x Tk` product, not a `Tq x Tk x D` tensor.
    """
    d = 2 * (q_spec.shape[-1] - 1)
    c = torch.full((q_spec.shape[-1],), 2.0, device=q_spec.device)
    c[0] = 1.0
    if d % 2 == 0:
        c[-1] = 1.0
    groups = q_spec.shape[1] // k_spec.shape[1]
    src = expand_kv(k_spec.abs() ** 2 * v_spec.abs() ** 2, groups)
    norms = ((q_spec.abs() ** 2 * c) @ src.transpose(-1, -2)).clamp_min(0).sqrt() / d**0.5
    amount = weights * norms
    return amount / amount.sum(-1, keepdim=True).clamp_min(torch.finfo(amount.dtype).tiny)


def _cached_state(layer: RecurrentLayer | None):
    return None if layer is None or not layer.state else (layer.state["memory"], layer.state["count"])


def _holo_kernel(query, key, value, call: AttentionCall, project: bool, layer: RecurrentLayer | None):
    """The fused Triton path (CUDA): same math, state carried in the kernels' packed layout."""
    from ..kernels import holo_triton as kt

    d = query.shape[-1]
    init = _cached_state(layer)
    if init is not None:
        init = (kt.pack_spectrum(init[0], kt.state_width(d)), init[1])
    out, (mem, n) = kt.holo_causal(query, key, value, call.key_padding, init, project)
    if layer is not None:
        layer.state = {"memory": kt.unpack_spectrum(mem, d), "count": n}
    return out


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
    """transformers attention function for `attn_implementation="holo"`; `scaling` is unused (HRR has no logits).

    Returns `(out (B, Tq, Hq, D), weights or None)`; weights are the contribution map when
    `output_attentions=True`.
    """
    call = parse_call("holo", module, query, key, value, attention_mask, kwargs)
    if key.shape[-1] != value.shape[-1]:
        raise HfAttnError(f"holo binds keys with values by circular convolution: key head_dim {key.shape[-1]} "
                         f"must equal value head_dim {value.shape[-1]}.")
    p = check_dropout("holo", dropout, module)
    project = bool(getattr(getattr(module, "config", None), "holo_unitary", True))
    d = query.shape[-1]
    want_map = bool(kwargs.get("output_attentions"))
    layer = recurrent_layer("holo", key, query.shape[2])
    if layer is not None and (call.materialised or not call.causal):
        raise HfAttnError("holo: RecurrentCache needs causal self-attention without position_bias or 4D masks; "
                          "use the default DynamicCache for this model.")
    if kernels_enabled(query) and call.causal and call.q_offset == 0 and not (call.materialised or want_map or p):
        return _holo_kernel(query, key, value, call, project, layer), None
    q_spec, k_spec, v_spec = _spectra(query, key, value, project)
    kv = k_spec * v_spec
    if p:
        keep = torch.rand(kv.shape[:3] + (1,), device=kv.device) >= p
        kv = kv * keep
    weights = None
    if call.materialised or want_map:
        b, hq, tq, _ = query.shape
        w = masked_softmax_weights(call, torch.zeros(b, hq, tq, key.shape[2], device=query.device))
    if call.materialised:
        kve = expand_kv(kv, call.groups)
        mem = torch.complex(w @ kve.real, w @ kve.imag)
        out = torch.fft.irfft(q_spec.conj() * mem, n=d, dim=-1).transpose(1, 2).contiguous()
    else:
        out, state = holo_linear(q_spec, kv, call, d, _cached_state(layer))
        out = ungroup(out)
        if layer is not None:
            layer.state = {"memory": state[0], "count": state[1]}
    if want_map:
        weights = contribution_map(q_spec, k_spec, v_spec, w).to(query.dtype)
    return out.to(query.dtype), weights
