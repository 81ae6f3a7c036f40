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

Sinks (`config.hf_attn_window_sinks = S`, Xiao et al. 2024, "Efficient Streaming Language Models with Attention
Sinks"): each row's first S real tokens stay in the exact part for every query (more columns of its band), and
the variant covers the older keys that are not sinks. Most heads of a pretrained model put much of their weight
on the first token; a window that drops it loses that mass.

Each part is computed normalised, with its log-mass (`log` of its denominator): the window part
`(softmax over the window) @ v` and `log sum e^{s_ts}`, the variant part `LIN / DEN` and `log DEN`. `combine` mixes
them as flash attention merges partial softmaxes, `y = out_w + beta (out_v - out_w)` with
`beta = sigmoid(log gamma + log DEN - log mass_w)`: no sum is ever formed on an absolute scale, so nothing
overflows in fp32/bf16 whatever the stabilisers are, and gamma = 0 gives the window part exactly.

Memory: the window part is banded, chunks of queries against the `chunk + W - 1` keys they can see, so memory is
O(T * (chunk + W)), never T x T. The variant part is the variant's own causal linear form over keys shifted by W
(the older keys of query t are the keys `<= t` of the shifted sequence). Decoding with a `RecurrentCache` keeps
the last W keys/values (and which are real) and the sinks (with their absolute positions) beside the variant's
state of every older key, so memory stays constant once W tokens are seen; `RecurrentCache(static=True)` keeps
them at fixed shapes and addresses, so `generate` can compile the decoding step. The Triton kernels do not do
windows: the PyTorch path runs when W > 0.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from transformers.utils import is_torchdynamo_compiling

from ..cache import RecurrentLayer
from ..utils import HfAttnError, set_config
from .common import AttentionCall, group_queries, learned_parts

DEFAULT_MIX = 0.1  # LoLCATs' initial mix of the linear part
QUERY_CHUNK = 128  # queries per band of the window part
CONFIG_KEYS = {  # the knobs, as the registry shows them for holo and performer
    "hf_attn_window": "W > 0: exact softmax over the last W keys + the variant over older keys (LoLCATs; "
    "hf_attn.set_window; default 0 = off)",
    "hf_attn_window_mix": "the variant's share in [0, 1] in a window hybrid (default 0.1)",
    "hf_attn_window_sinks": "the first S real tokens stay in the exact softmax part of a window hybrid "
    "(attention sinks, StreamingLLM; hf_attn.set_window sets 4; absent = 0)",
}
DEFAULT_SINKS = 4  # StreamingLLM's number of attention-sink tokens
FULL_ATTR = "hf_attn_sinks_full"  # set on a RecurrentLayer once every row of its state holds all its sinks


@dataclasses.dataclass
class Window:
    """A resolved window: its size, the per-query-head log share of the variant, `(Hq,)` (or a scalar), and the
    number of sink tokens kept exact."""

    size: int
    log_mix: torch.Tensor
    sinks: int = 0


@dataclasses.dataclass
class Sinks:
    """The first `S` real keys of each sequence row (attention sinks): keys/values `(B, Hkv, S, D)`, their absolute
    positions `pos (B, S)` and whether each slot holds one (`valid (B, S)`; False while a row has seen fewer)."""

    key: torch.Tensor
    value: torch.Tensor
    pos: torch.Tensor
    valid: torch.Tensor


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


def checked_sinks(variant: str, sinks) -> int:
    """`sinks` if it is a valid `hf_attn_window_sinks` (a whole number >= 0), else an error naming the fix."""
    if isinstance(sinks, bool) or not isinstance(sinks, int) or sinks < 0:
        raise HfAttnError(f"{variant}: config.hf_attn_window_sinks must be a whole number >= 0 (the first tokens kept "
                          f"in the softmax part), got {sinks!r}; set e.g. hf_attn.set_window(model, 64, sinks=4).")
    return sinks


def set_window(model: torch.nn.Module, size: int, mix: float | None = None,
               sinks: int | None = DEFAULT_SINKS) -> torch.nn.Module:
    """Set `hf_attn_window`, `hf_attn_window_sinks` (unless `sinks=None`) and `hf_attn_window_mix` (when given) on
    `model.config` and on every sub-model's own config copy (T5's stacks keep one), after checking them; returns
    the model. Saved with the model's config.

    Sinks: without its first tokens a sliding window loses the "attention sink" most heads park their weight on
    (Xiao et al. 2024, "Efficient Streaming Language Models with Attention Sinks"); SmolLM2-135M's held-out
    perplexity at 512 tokens is 13.6 with full attention, 42.2 with a 64-token window and 14.4 with the window
    plus 4 sinks (`python recipes/evidence/sinks_ablation.py`)."""
    knobs: dict = {"hf_attn_window": checked_size("hf_attn_window", size)}
    if sinks is not None:
        knobs["hf_attn_window_sinks"] = checked_sinks("hf_attn_window_sinks", sinks)
    if mix is not None:
        knobs["hf_attn_window_mix"] = checked_mix("hf_attn_window_mix", mix)
    set_config(model, **knobs)
    return model


def window_of(variant: str, module, num_heads: int, device) -> Window | None:
    """The window the model asks for (`config.hf_attn_window`), or None when it is 0; validates both knobs."""
    cfg = getattr(module, "config", None)
    size = checked_size(variant, getattr(cfg, "hf_attn_window", 0) or 0)
    if size == 0:
        return None
    sinks = checked_sinks(variant, getattr(cfg, "hf_attn_window_sinks", 0) or 0)
    logit = getattr(learned_parts(module), "window_mix_logit", None)
    if logit is not None:
        if logit.shape != (num_heads,):
            raise HfAttnError(f"{variant}: hf_attn_parts.window_mix_logit has shape {tuple(logit.shape)}, expected "
                              f"one per query head ({num_heads},); wrap the model again with hf_attn.wrap.")
        return Window(size, torch.nn.functional.logsigmoid(logit.float()), sinks)
    mix = checked_mix(variant, getattr(cfg, "hf_attn_window_mix", DEFAULT_MIX))
    return Window(size, torch.tensor(math.log(mix) if mix > 0 else -math.inf, device=device), sinks)


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


def window_softmax(query, key, value, keep, q_offset: int, size: int, scaling: float, sinks: Sinks | None = None,
                   base: int = 0):
    """Softmax attention of each query over its last `size` visible keys (and the `sinks` older than those), banded.

    query `(B, Hq, Tq, D)`, key/value `(B, Hkv, Tk, D)`, keep `(B, 1 or Hkv, Tk)` bool (real, not dropped), query i
    at key position `q_offset + i`, key 0 at absolute position `base` (sinks carry absolute positions). Returns the
    normalised output `(B, Hkv, G, Tq, Dv)` and the log-mass `log sum_exact e^{s_ts}` `(B, Hkv, G, Tq)` (-inf where
    nothing is visible).
    """
    b, hq, tq, _ = query.shape
    hkv, tk = key.shape[1], key.shape[2]
    if tq == 1:  # a decoding step: one row, no bands
        return _one_query(query, key, value, keep, q_offset, size, scaling, sinks, base)
    width = min(size, tk)
    chunk = min(max(width, 16), QUERY_CHUNK, tq)
    n = -(-tq // chunk)
    q = torch.nn.functional.pad(group_queries(query.float(), hq // hkv), (0, 0, 0, n * chunk - tq))
    q = q.reshape(b, hkv, hq // hkv, n, chunk, -1)
    kb = _bands(key.float(), width, chunk, n, q_offset, 0.0)
    vb = _bands(value.float(), width, chunk, n, q_offset, 0.0)
    keep_b = _bands(keep[..., None], width, chunk, n, q_offset, False)[..., 0]  # (B, 1|Hkv, n, band)
    rows = torch.arange(chunk, device=query.device)[:, None]
    cols = torch.arange(chunk + width - 1, device=query.device)
    band = (cols >= rows) & (cols <= rows + width - 1)  # key t - W < s <= t of query row r: column r .. r + W - 1
    vis = band & keep_b[:, :, None, :, None, :]  # (B, Hkv, 1, n, chunk, band)
    s = torch.einsum("bhgncd,bhnkd->bhgnck", q, kb) * scaling
    if sinks is None:
        out, lse = _partial(s, vis, lambda w: torch.einsum("bhgnck,bhnkd->bhgncd", w, vb))
    else:  # the sinks as more columns of every band, visible once they left the query's window
        last = base + q_offset + torch.arange(n * chunk, device=query.device).view(n, chunk) - size
        sink_vis = sinks.valid[:, None, None] & (sinks.pos[:, None, None] <= last[..., None])  # (B, n, chunk, S)
        sink_vis = sink_vis[:, None, None]  # (B, 1, 1, n, chunk, S)
        width_b = vis.shape[-1]
        s = torch.cat([s, torch.einsum("bhgncd,bhsd->bhgncs", q, sinks.key.float()) * scaling], -1)
        vis = torch.cat([vis, sink_vis.expand(-1, vis.shape[1], -1, -1, -1, -1)], -1)
        out, lse = _partial(s, vis, lambda w: torch.einsum("bhgnck,bhnkd->bhgncd", w[..., :width_b], vb)
                            + torch.einsum("bhgncs,bhsd->bhgncd", w[..., width_b:], sinks.value.float()))
    cut = lambda x: x.reshape(*x.shape[:3], n * chunk, *x.shape[5:])[:, :, :, :tq]  # noqa: E731
    return cut(out), cut(lse)


def _one_query(query, key, value, keep, q_offset: int, size: int, scaling: float, sinks: Sinks | None, base: int):
    """`window_softmax` for a single query row (a decoding step): its window is one slice of the keys, so the
    bands, their masks and the padding to whole chunks are not needed (a third of a hybrid layer's host ops)."""
    lo = max(q_offset - size + 1, 0)
    q = group_queries(query.float(), query.shape[1] // key.shape[1])  # (B, Hkv, G, 1, D)
    keys, values = key[:, :, lo:q_offset + 1].float(), value[:, :, lo:q_offset + 1].float()
    vis = keep[:, :, None, None, lo:q_offset + 1]  # (B, 1|Hkv, 1, 1, K)
    if sinks is not None:  # visible once they left the query's window
        keys, values = torch.cat([keys, sinks.key.float()], 2), torch.cat([values, sinks.value.float()], 2)
        left = sinks.valid & (sinks.pos <= base + q_offset - size)  # (B, S)
        vis = torch.cat([vis.expand(-1, key.shape[1], -1, -1, -1), left[:, None, None, None]
                         .expand(-1, key.shape[1], -1, -1, -1)], -1)
    s = torch.einsum("bhgqd,bhkd->bhgqk", q, keys) * scaling
    return _partial(s, vis, lambda w: torch.einsum("bhgqk,bhkd->bhgqd", w, values))


def _partial(s: torch.Tensor, vis: torch.Tensor, weighted_sum) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the visible scores `s (..., K)`: the normalised `weighted_sum(weights)` and the log-mass
    `log sum e^s` (-inf where nothing is visible); stabilised by the row's (detached) peak."""
    s = s.masked_fill(~vis, -math.inf)
    peak = s.amax(-1, keepdim=True).detach().clamp_min(torch.finfo(s.dtype).min)
    w = torch.exp(s - peak)
    mass = w.sum(-1)
    return weighted_sum(w) / mass.clamp_min(torch.finfo(w.dtype).tiny)[..., None], safe_log(mass) + peak[..., 0]


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
    """Prepend the keys/values a `RecurrentCache` layer kept from the last window; returns them, the keep mask,
    the call with its query offset moved past the buffer, and the absolute position of key 0 (the tokens the
    layer saw before). Without a cache layer the inputs come back as they are, key 0 at position 0."""
    if layer is None or "window_k" not in layer.state:
        return key, value, keep, call, 0 if layer is None else layer.seen - key.shape[2]
    st = layer.state
    key, value = torch.cat([st["window_k"], key], 2), torch.cat([st["window_v"], value], 2)
    keep = torch.cat([st["window_keep"], keep.expand(-1, st["window_keep"].shape[1], -1)], 2)
    return key, value, keep, dataclasses.replace(call, q_offset=call.q_offset + st["window_k"].shape[2]), \
        layer.seen - key.shape[2]


def find_sinks(layer: RecurrentLayer | None, key, value, keep, base: int, count: int) -> Sinks | None:
    """The first `count` real keys of each row: those a `RecurrentCache` layer kept, then this call's real keys in
    order (key 0 at absolute position `base`). Attention dropout does not drop sinks."""
    if not count:
        return None
    b, hkv, tk, d = key.shape
    pos = base + torch.arange(tk, device=key.device)
    if layer is not None and "sink_k" in layer.state:
        st = layer.state
        prior = Sinks(st["sink_k"], st["sink_v"], st["sink_pos"], st["sink_valid"])
        if getattr(layer, FULL_ATTR, False):  # every row has its sinks: decoding steps skip the search
            return prior
    else:
        prior = Sinks(key.new_zeros(b, hkv, count, d), value.new_zeros(b, hkv, count, value.shape[-1]),
                      torch.full((b, count), -1, device=key.device),
                      torch.zeros(b, count, dtype=torch.bool, device=key.device))
    known = ((pos[None, None, :] == prior.pos[:, :, None]) & prior.valid[:, :, None]).any(1)
    fresh = keep[:, 0] & ~known  # real keys not yet among the sinks (all later than them)
    never = 2 * (count + tk)
    order = torch.cat([torch.where(prior.valid, torch.arange(count, device=key.device), never),
                       torch.where(fresh, count + torch.arange(tk, device=key.device), never)], 1)
    idx = order.argsort(dim=1, stable=True)[:, :count]  # (B, S): kept sinks first, then this call's real keys
    valid = order.gather(1, idx) < never

    def pick(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return torch.cat([old, new], 2).gather(2, idx[:, None, :, None].expand(-1, hkv, -1, new.shape[-1]))

    sink_pos = torch.cat([prior.pos, pos.expand(b, -1)], 1).gather(1, idx)
    if layer is not None and not is_torchdynamo_compiling():  # one host sync per call until every row has its sinks
        setattr(layer, FULL_ATTR, bool(valid.all()))  # (usually the prefill's only); a compiled step keeps searching
    return Sinks(pick(prior.key, key), pick(prior.value, value), torch.where(valid, sink_pos, -1), valid)


def not_sinks(keep: torch.Tensor, sinks: Sinks | None, base: int) -> torch.Tensor:
    """`keep` with the sink keys removed: the variant covers older keys that are not sinks."""
    if sinks is None:
        return keep
    pos = base + torch.arange(keep.shape[-1], device=keep.device)
    sink = ((pos[None, None, :] == sinks.pos[:, :, None]) & sinks.valid[:, :, None]).any(1)
    return keep & ~sink[:, None]


def buffer_state(layer: RecurrentLayer, key, value, keep, size: int,
                 sinks: Sinks | None = None) -> dict[str, torch.Tensor]:
    """The last `size` keys/values and keep flags (and the sinks): the variant's state holds every key before them
    (its causal form ran on keys shifted by `size`), the next query's window needs the last `size - 1`, its older
    part the one before those.

    A static layer (`RecurrentCache(static=True)`) gets exactly `size` entries from the prefill on, fewer keys
    padded in front with `keep` False: every decoding step then has the same shapes, which a compiled step needs.
    The padding sits at the positions before the first token and is never visible, so results do not change.
    """
    short = size - key.shape[2]
    if layer.static and short > 0:
        key, value = (torch.nn.functional.pad(x, (0, 0, short, 0)) for x in (key, value))
        keep = torch.nn.functional.pad(keep, (short, 0), value=False)
    start = max(key.shape[2] - size, 0)
    state = {"window_k": key[:, :, start:], "window_v": value[:, :, start:], "window_keep": keep[:, :, start:]}
    if sinks is not None:
        state.update(sink_k=sinks.key, sink_v=sinks.value, sink_pos=sinks.pos, sink_valid=sinks.valid)
    return state
