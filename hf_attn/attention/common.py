"""What every hf-attn attention function needs before it does its own math.

`parse_call` turns transformers' call (`module, query, key, value, attention_mask, **kwargs`) into one
`AttentionCall`: causality, the key-padding vector, any additive bias that forces a materialised path
(T5's `position_bias`, a user-supplied 4D mask), and the query offset under a KV cache. It checks shapes
and refuses kwargs a variant would otherwise swallow silently (`softcap`, `s_aux`, an active sliding window).

`autocast_entry` makes a variant behave like `sdpa` inside `torch.autocast`: autocast casts sdpa's q/k/v to
the autocast dtype and the result comes back in it, so the variants do the same (`autocast_inputs`), then
run their own fp32-accumulating math with autocast off (which would otherwise recast their internal matmuls).

Learned parts (the interface wrappers use; attention code never imports a wrapper): a wrapper that gives a
variant trainable pieces registers one module at `module.hf_attn_parts` on each attention module it serves
(`learned_parts(module)`); the attention function reads these attributes from it when they are present:

- `window_mix_logit` `(Hq,)`: the per-head share of the variant in a window hybrid, `sigmoid(logit)`
  (`attention/window.py`); absent or None: `config.hf_attn_window_mix`.
- performer `features` `(Hkv, m, D)`: the FAVOR+ projection per key/value head (Hedgehog-style learned
  feature map), used in place of the random `(m, D)` one.
- holo `q_map` `(Hq, D, Db)`, `k_map` `(Hkv, D, Db)`: per-head linear maps of queries and keys into the
  binding space of width `Db` (values are zero-padded to `Db`, outputs truncated back to `D`).

Without `hf_attn_parts` every variant runs parameter-free, exactly as before.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..cache import tokens_seen
from ..utils import HfAttnError, compile_constant


PARTS_ATTR = "hf_attn_parts"


def learned_parts(module) -> torch.nn.Module | None:
    """The learned parts a wrapper attached to this attention module (see the module docstring), or None."""
    return getattr(module, PARTS_ATTR, None)


@dataclass
class AttentionCall:
    """A parsed attention call. Shapes: q `(B, Hq, Tq, D)`, k/v `(B, Hkv, Tk, D)`."""

    causal: bool
    key_padding: torch.Tensor | None  # (B, Tk) bool, True = real token
    bias: torch.Tensor | None  # additive float, broadcastable to (B, Hq, Tq, Tk); forces the materialised path
    q_offset: int  # absolute position of the first query among the keys (Tk - Tq when causal)
    groups: int  # query heads per key/value head (GQA)

    @property
    def materialised(self) -> bool:
        """True when the mask is an explicit additive bias tensor rather than implied causality."""
        return self.bias is not None


@compile_constant
def _autocast_available(device_type: str) -> bool:
    """`torch.amp.is_autocast_available`, memoised: dynamo in torch 2.11 cannot trace it (a graph break in every
    layer of a compiled decoding step), but reads the memo."""
    return torch.amp.is_autocast_available(device_type)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast casts to on `device_type`, or None outside an autocast region (or on a device
    autocast does not know, e.g. meta)."""
    if not _autocast_available(device_type) or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def autocast_inputs(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors as autocast hands them to `scaled_dot_product_attention`: inside an autocast region for
    their device, floating tensors other than float64 are cast to the autocast dtype; otherwise unchanged."""
    dtype = _autocast_dtype(tensors[0].device.type)
    if dtype is None:
        return tensors
    return tuple(t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t for t in tensors)


def autocast_entry(fn: Callable) -> Callable:
    """Wrap an attention function `(module, query, key, value, attention_mask, ...)` so it runs under
    `torch.autocast` the way sdpa does: q/k/v cast to the autocast dtype (`autocast_inputs`), output in that
    dtype, and the body run with autocast off so its explicit fp32 accumulation is kept. Outside autocast it
    is `fn` unchanged, so mixed dtypes there still meet `parse_call`'s error."""

    @functools.wraps(fn)
    def run(module, query, key, value, attention_mask, *args, **kwargs):
        device_type = query.device.type
        if _autocast_dtype(device_type) is None:
            return fn(module, query, key, value, attention_mask, *args, **kwargs)
        query, key, value = autocast_inputs(query, key, value)
        with torch.autocast(device_type, enabled=False):
            return fn(module, query, key, value, attention_mask, *args, **kwargs)

    return run


def parse_call(variant: str, module, query, key, value, attention_mask, kwargs: dict) -> AttentionCall:
    """Validate one call and gather what the variant needs; errors name the problem and the fix."""
    for t, name in ((query, "query"), (key, "key"), (value, "value")):
        if t.dim() != 4:
            raise HfAttnError(f"{variant}: {name} must be (batch, heads, seq, head_dim), got shape {tuple(t.shape)}.")
    b, hq, tq, d = query.shape
    _, hkv, tk, dk = key.shape
    if key.shape[:3] != value.shape[:3] or key.shape[0] != b:
        raise HfAttnError(
            f"{variant}: query {tuple(query.shape)}, key {tuple(key.shape)} and value {tuple(value.shape)} "
            "must share batch size, and key/value must share heads and length."
        )
    if dk != d:
        raise HfAttnError(f"{variant}: query head_dim {d} differs from key head_dim {dk}; they must match.")
    if hq % hkv:
        raise HfAttnError(f"{variant}: {hq} query heads is not a multiple of {hkv} key/value heads (GQA).")
    if not (query.dtype == key.dtype == value.dtype):
        raise HfAttnError(
            f"{variant}: query/key/value dtypes differ ({query.dtype}, {key.dtype}, {value.dtype}); cast them to "
            "one, or call inside torch.autocast, which casts them to its dtype as it does for sdpa."
        )
    if kwargs.get("softcap") is not None:
        raise HfAttnError(f"{variant} does not support logit soft-capping (softcap); use 'eager' for this model.")
    if kwargs.get("s_aux") is not None:
        raise HfAttnError(f"{variant} does not support attention sinks (s_aux); use 'eager' for this model.")
    window = kwargs.get("sliding_window")
    covered = tokens_seen(key)  # under a RecurrentCache the earlier keys live in the state
    if window is not None and covered > window:
        raise HfAttnError(
            f"{variant}: the model asks for a sliding window of {window} tokens but this call covers {covered} keys; "
            f"{variant} attends to the whole prefix. Set config.sliding_window=None (or use_sliding_window=False) "
            "to accept full attention, or keep inputs within the window."
        )

    is_causal = kwargs.get("is_causal")
    causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
    if causal and tq > tk:
        raise HfAttnError(f"{variant}: causal call with more queries ({tq}) than keys ({tk}).")

    key_padding, bias = None, None
    if attention_mask is not None:
        if attention_mask.dim() == 2:
            if attention_mask.shape != (b, tk):
                raise HfAttnError(
                    f"{variant}: 2D attention mask of shape {tuple(attention_mask.shape)} does not match "
                    f"(batch, kv_len) = ({b}, {tk})."
                )
            key_padding = attention_mask.bool()
        elif attention_mask.dim() == 4:
            if attention_mask.shape[-2:] != (tq, tk):
                raise HfAttnError(
                    f"{variant}: 4D attention mask {tuple(attention_mask.shape)} does not end in (q_len, kv_len) = "
                    f"({tq}, {tk})."
                )
            bias = _additive(attention_mask)
        else:
            raise HfAttnError(f"{variant}: attention mask must be 2D or 4D, got {attention_mask.dim()}D.")
    position_bias = kwargs.get("position_bias")
    if position_bias is not None:
        bias = position_bias.float() if bias is None else bias + position_bias.float()
    return AttentionCall(causal, key_padding, bias, tk - tq if causal else 0, hq // hkv)


def _additive(mask: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.float()


def visible(call: AttentionCall, tq: int, tk: int, device) -> torch.Tensor:
    """Boolean `(B or 1, 1, Tq, Tk)` of which keys each query may see (causality and key padding)."""
    vis = torch.ones(1, 1, tq, tk, dtype=torch.bool, device=device)
    if call.causal:
        rows = torch.arange(tq, device=device).view(-1, 1) + call.q_offset
        vis = vis & (torch.arange(tk, device=device).view(1, -1) <= rows)
    if call.key_padding is not None:
        vis = vis & call.key_padding[:, None, None, :]
    return vis


def masked_softmax_weights(call: AttentionCall, scores: torch.Tensor) -> torch.Tensor:
    """Row-normalised weights over visible keys; rows with no visible key get all zeros (never NaN)."""
    tq, tk = scores.shape[-2:]
    vis = visible(call, tq, tk, scores.device)
    if call.bias is not None:
        scores = scores + call.bias
    scores = scores.masked_fill(~vis, float("-inf"))
    peak = scores.amax(-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).min).nan_to_num(0.0, neginf=0.0)
    w = torch.exp(scores - peak).masked_fill(~vis, 0.0)
    return w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


def group_queries(x: torch.Tensor, groups: int) -> torch.Tensor:
    """`(B, Hq, T, F)` -> `(B, Hkv, G, T, F)`: query heads grouped under their key/value head, no copy of k/v."""
    b, hq, t = x.shape[:3]
    return x.reshape(b, hq // groups, groups, t, *x.shape[3:])


def ungroup(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `group_queries`, then to transformers' output layout `(B, T, Hq, D)`."""
    b, hkv, g, t = x.shape[:4]
    return x.reshape(b, hkv * g, t, *x.shape[4:]).transpose(1, 2).contiguous()


def expand_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Repeat key/value heads for the materialised (short-sequence) paths."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def check_dropout(variant: str, dropout: float, module) -> float:
    """Attention dropout is applied only while the module trains."""
    if dropout and not 0.0 <= dropout < 1.0:
        raise HfAttnError(f"{variant}: dropout must be in [0, 1), got {dropout}.")
    return dropout if getattr(module, "training", False) else 0.0
