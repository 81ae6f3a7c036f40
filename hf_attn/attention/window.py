"""Window hybrids: exact softmax over the last W keys plus a linear variant over every older key.

LoLCATs (Zhang et al. 2024, "LoLCATs: On Low-Rank Linearizing of Large Language Models") converts a softmax
model by keeping sliding-window softmax attention and letting a linear attention cover what falls out of the
window, both under one normaliser. With `config.hf_attn_window = W > 0` holo and performer compute, per query
t and query head h,

    y_t = (sum_{s in window} e^{s_ts - m_t} v_s + gamma_h LIN_t) / (sum_{s in window} e^{s_ts - m_t} + gamma_h DEN_t)

where the window is the causal keys `t - W < s <= t` (visible ones: padding is excluded), `s_ts = scaling q_t.k_s`
the model's own logits, and `LIN_t, DEN_t` the variant's numerator and normaliser over the older visible keys
(`s <= t - W`) on the window's scale (each variant says how, in its `attention.py`). `gamma_h` in [0, 1] is the
variant's share: `config.hf_attn_window_mix` (default 0.1, LoLCATs' starting value) for every head, or a learned
per-head logit a wrapper puts at `module.hf_attn_parts.window_mix_logit` (`gamma = sigmoid(logit)`; a logit of
-inf makes the hybrid window-only). With W >= T there are no older keys and the output is softmax attention.

Each part is computed normalised, with its log-mass (`log` of its denominator): the window part
`(softmax over the window) @ v` and `log sum e^{s_ts}`, the variant part `LIN / DEN` and `log DEN`. `combine` mixes
them as flash attention merges partial softmaxes, `y = out_w + beta (out_v - out_w)` with
`beta = sigmoid(log gamma + log DEN - log mass_w)`: no sum is ever formed on an absolute scale, so nothing
overflows in fp32/bf16 whatever the stabilisers are, and gamma = 0 gives the window part exactly.

Memory: the window part is banded, chunks of queries against the `chunk + W - 1` keys they can see, so memory is
O(T * (chunk + W)), never T x T. The variant part is the variant's own causal linear form over keys shifted by W
(the older keys of query t are the keys `<= t` of the shifted sequence). Decoding with a `RecurrentCache` keeps
the last W keys/values (and which are real) beside the variant's state of every older key, so memory stays
constant once W tokens are seen. The Triton kernels do not do windows: the PyTorch path runs when W > 0.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from ..cache import RecurrentLayer
from ..utils import HfAttnError, set_config
from .common import AttentionCall, group_queries, learned_parts

DEFAULT_MIX = 0.1  # LoLCATs' initial mix of the linear part
QUERY_CHUNK = 128  # queries per band of the window part
CONFIG_KEYS = {  # the knobs, as the registry shows them for holo and performer
    "hf_attn_window": "W > 0: exact softmax over the last W keys + the variant over older keys (LoLCATs; "
    "hf_attn.set_window; default 0 = off)",
    "hf_attn_window_mix": "the variant's share in [0, 1] in a window hybrid (default 0.1)",
}


@dataclasses.dataclass
class Window:
    """A resolved window: its size and the per-query-head log share of the variant, `(Hq,)` (or a scalar)."""

    size: int
    log_mix: torch.Tensor


def checked_size(variant: str, size) -> int:
    """`size` if it is a valid `hf_attn_window`, else an error naming the fix."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise HfAttnError(f"{variant}: config.hf_attn_window must be a whole number >= 0 (0 = no window), got "
                          f"{size!r}; set e.g. hf_attn.set_window(model, 64).")
    return size


def checked_mix(variant: str, mix) -> float:
    """`mix` as a float if it is a valid `hf_attn_window_mix` (a share in [0, 1]), else an error naming the fix."""
    if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0.0 <= mix <= 1.0:
        raise HfAttnError(f"{variant}: config.hf_attn_window_mix must be a number in [0, 1] (the variant's share), "
                          f"got {mix!r}; set e.g. hf_attn.set_window(model, 64, mix=0.1).")
    return float(mix)


def set_window(model: torch.nn.Module, size: int, mix: float | None = None) -> torch.nn.Module:
    """Set `hf_attn_window` (and `hf_attn_window_mix` when given) on `model.config` and on every sub-model's own
    config copy (T5's stacks keep one), after checking them; returns the model. Saved with the model's config."""
    checked_size("hf_attn_window", size)
    if mix is not None:
        checked_mix("hf_attn_window_mix", mix)
    set_config(model, hf_attn_window=size, **({} if mix is None else {"hf_attn_window_mix": float(mix)}))
    return model


def window_of(variant: str, module, num_heads: int, device) -> Window | None:
    """The window the model asks for (`config.hf_attn_window`), or None when it is 0; validates both knobs."""
    cfg = getattr(module, "config", None)
    size = checked_size(variant, getattr(cfg, "hf_attn_window", 0) or 0)
    if size == 0:
        return None
    logit = getattr(learned_parts(module), "window_mix_logit", None)
    if logit is not None:
        if logit.shape != (num_heads,):
            raise HfAttnError(f"{variant}: hf_attn_parts.window_mix_logit has shape {tuple(logit.shape)}, expected "
                              f"one per query head ({num_heads},); wrap the model again with hf_attn.wrap.")
        return Window(size, torch.nn.functional.logsigmoid(logit.float()))
    mix = checked_mix(variant, getattr(cfg, "hf_attn_window_mix", DEFAULT_MIX))
    return Window(size, torch.tensor(math.log(mix) if mix > 0 else -math.inf, device=device))


def check_window_call(variant: str, call: AttentionCall, kwargs: dict) -> None:
    """Windows are causal self-attention without extra biases; anything else is refused with the fix."""
    if not call.causal or call.materialised:
        raise HfAttnError(f"{variant}: config.hf_attn_window covers causal self-attention without position_bias "
                          "or 4D masks (decoders such as Llama, Qwen, Mistral); set config.hf_attn_window = 0 for "
                          "this model (T5, encoders).")
    if kwargs.get("output_attentions"):
        raise HfAttnError(f"{variant}: output_attentions is not available with config.hf_attn_window > 0; "
                          "set config.hf_attn_window = 0 to get attention maps.")


def safe_log(x: torch.Tensor) -> torch.Tensor:
    """`log x` for `x >= 0` with `log 0 = -inf` and finite gradients everywhere."""
    return torch.where(x > 0, x.clamp_min(torch.finfo(x.dtype).tiny).log(), -math.inf)


def shift_keys(x: torch.Tensor, by: int) -> torch.Tensor:
    """`x` along dim 2 moved `by` places later (zeros in front, the last `by` dropped): the older keys of query
    t are the keys `<= t` of the shifted sequence, so a variant's causal form gives its older-key part."""
    t = x.shape[2]
    pad = [0, 0] * (x.dim() - 3) + [min(by, t), 0]
    return torch.nn.functional.pad(x, pad)[:, :, :t]


def _bands(x: torch.Tensor, width: int, chunk: int, chunks: int, offset: int, fill) -> torch.Tensor:
    """`(..., Tk, *rest)` keys (dim 2) -> `(..., n, chunk + width - 1, *rest)`: band `c` holds the keys the queries
    `c * chunk ...` can see, `x[offset + c * chunk - width + 1 ...]`, padded with `fill` outside `x`."""
    tq = x.shape[2] - offset
    rest = x.dim() - 3
    x = torch.nn.functional.pad(x, [0, 0] * rest + [width - 1, chunks * chunk - tq], value=fill)[:, :, offset:]
    bands = x.unfold(2, chunk + width - 1, chunk)  # (B, H, n, *rest, band)
    return bands.movedim(-1, 3) if rest else bands


def window_softmax(query, key, value, keep, q_offset: int, size: int, scaling: float):
    """Softmax attention of each query over its last `size` visible keys, banded.

    query `(B, Hq, Tq, D)`, key/value `(B, Hkv, Tk, D)`, keep `(B, 1 or Hkv, Tk)` bool (real, not dropped), query i
    at key position `q_offset + i`. Returns the normalised output `(B, Hkv, G, Tq, Dv)`, the log-mass
    `log sum_window e^{s_ts}` and the peak `max_window s_ts`, both `(B, Hkv, G, Tq)` (-inf / finite min where
    nothing is visible).
    """
    b, hq, tq, _ = query.shape
    hkv, tk = key.shape[1], key.shape[2]
    width = min(size, tk)
    chunk = min(max(width, 16), QUERY_CHUNK, tq)
    n = -(-tq // chunk)
    q = group_queries(query.float(), hq // hkv)
    q = torch.nn.functional.pad(q, (0, 0, 0, n * chunk - tq)).reshape(b, hkv, hq // hkv, n, chunk, -1)
    kb = _bands(key.float(), width, chunk, n, q_offset, 0.0)
    vb = _bands(value.float(), width, chunk, n, q_offset, 0.0)
    keep_b = _bands(keep[..., None], width, chunk, n, q_offset, False)[..., 0]  # (B, 1|Hkv, n, band)
    rows = torch.arange(chunk, device=query.device)[:, None]
    cols = torch.arange(chunk + width - 1, device=query.device)
    band = (cols >= rows) & (cols <= rows + width - 1)  # key t - W < s <= t of query row r: column r .. r + W - 1
    vis = band & keep_b[:, :, None, :, None, :]  # (B, Hkv, 1, n, chunk, band)
    s = torch.einsum("bhgncd,bhnkd->bhgnck", q, kb) * scaling
    s = s.masked_fill(~vis, -math.inf)
    peak = s.amax(-1).detach().clamp_min(torch.finfo(s.dtype).min)
    w = torch.exp(s - peak[..., None])
    mass = w.sum(-1)
    out = torch.einsum("bhgnck,bhnkd->bhgncd", w, vb) / mass.clamp_min(torch.finfo(w.dtype).tiny)[..., None]
    lse = safe_log(mass) + peak
    cut = lambda x: x.reshape(*x.shape[:3], n * chunk, *x.shape[5:])[:, :, :, :tq]  # noqa: E731
    return cut(out), cut(lse), cut(peak)


def combine(out_w, log_mass_w, out_v, log_mass_v, log_mix) -> torch.Tensor:
    """`(e^{lw} out_w + gamma e^{lv} out_v) / (e^{lw} + gamma e^{lv})`, from the normalised parts and log-masses.

    Shapes: outputs `(B, Hkv, G, Tq, D)`, log-masses `(B, Hkv, G, Tq)`, `log_mix` `(Hq,)` or a scalar.
    """
    hkv, g = out_w.shape[1], out_w.shape[2]
    if log_mix.dim():
        log_mix = log_mix.view(hkv, g, 1)
    a = log_mass_v + log_mix
    top = torch.maximum(a, log_mass_w).detach().clamp_min(torch.finfo(a.dtype).min)
    ea, ew = torch.exp(a - top), torch.exp(log_mass_w - top)
    beta = ea / (ea + ew).clamp_min(torch.finfo(a.dtype).tiny)
    return out_w + beta[..., None] * (out_v - out_w)


def key_keep(call: AttentionCall, batch: int, length: int, device) -> torch.Tensor:
    """`(B, 1, Tk)` bool: which keys of the call are real (not padding)."""
    if call.key_padding is None:
        return torch.ones(batch, 1, length, dtype=torch.bool, device=device)
    return call.key_padding[:, None, :]


def with_buffer(layer: RecurrentLayer | None, key, value, keep, call: AttentionCall):
    """Prepend the keys/values a `RecurrentCache` layer kept from the last window; returns them, the keep mask and
    the call with its query offset moved past the buffer. Without a cache layer the inputs come back as they are."""
    if layer is None or "window_k" not in layer.state:
        return key, value, keep, call
    st = layer.state
    key, value = torch.cat([st["window_k"], key], 2), torch.cat([st["window_v"], value], 2)
    keep = torch.cat([st["window_keep"], keep.expand(-1, st["window_keep"].shape[1], -1)], 2)
    return key, value, keep, dataclasses.replace(call, q_offset=call.q_offset + st["window_k"].shape[2])


def buffer_state(key, value, keep, size: int) -> dict[str, torch.Tensor]:
    """The last `size` keys/values and keep flags: the variant's state holds every key before them (its causal
    form ran on keys shifted by `size`), the next query's window needs the last `size - 1`, its older part the
    one before those."""
    start = max(key.shape[2] - size, 0)
    return {"window_k": key[:, :, start:], "window_v": value[:, :, start:], "window_keep": keep[:, :, start:]}
