"""Gauge attention: `softmax_j(-KL(q_i || Omega_ij q_j) / kappa)` between Gaussian beliefs (docs/gauge.md).

Parameter-free form (`attn_implementation="gauge"`): `mu` = the head's query (query side) or key (key
side) after RoPE, one variance per irrep block from `config.gauge_variance`, identity frames, temperature
`config.gauge_kappa` (default 1/scaling, so the `q.k` part of the score equals the model's own logit), blocks
from `config.gauge_irrep_spec` (see `irreps.py` beside this module). The learned form (`hf_attn.wrap(model,
GaugeConfig())`) hands in its own beliefs (frames and variances) as the kwarg `gauge_beliefs`.

Paths, all fed by the same algebra: whenever every belief has one variance per irrep block, the KL is
rotation-invariant inside each block and `-KL/kappa` becomes `q . k + qe . ke + c_j` (`beliefs.augmented_parts`:
means in their own frames, per-token-variance terms, a per-key constant).
- fused (CUDA, automatic; `HF_ATTN_TRITON=0` turns it off): the Triton flash kernel in `kernel.py` beside this
  module takes those terms at head_dim, the key constant in fp32. Causality and key padding only.
- SDPA (CPU, and masks/dropout the kernel does not take): the terms concatenated into augmented vectors
  (`beliefs.augmented`, head_dim + 1..2 dims, + n_blocks with per-token variances, padded to a multiple of 8)
  through `torch.nn.functional.scaled_dot_product_attention`, so flash/cuDNN/efficient kernels serve it;
  causal without padding needs no mask (memory linear in T).
- explicit: the KL on the full `Tq x Tk` grid (`kl_explicit`); used for per-dimension variances
  (`GaugeConfig(variance_mode="diagonal")`) and when `output_attentions=True` asks for the weights.
T5's `position_bias` (and any float 4D mask) is added to the scores on the SDPA and explicit paths.
Diagnostics: if `hf_attn.attention.gauge.diagnostics.collect(model)` is active, each call records row_std, mu_dist,
phi_std and KL statistics from sampled rows of the tensors it already has.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from ...utils import HfAttnError
from ...kernels import kernels_enabled
from .beliefs import Beliefs, augmented, augmented_parts, kl_explicit
from .settings import GaugeSettings, settings_from_config
from ..common import AttentionCall, autocast_entry, check_dropout, expand_kv, masked_softmax_weights, parse_call, visible

EXPLICIT_CHUNK = 1 << 24  # elements of the (rows, Tk, D) KL intermediate per query chunk


class ParameterFree:
    """Beliefs of the parameter-free form: means = query/key, config variances, identity frames."""

    def __init__(self, settings: GaugeSettings):
        self.settings = settings

    def beliefs(self, query: torch.Tensor, key: torch.Tensor) -> tuple[Beliefs, Beliefs]:
        """Query and key beliefs with the means as given and the configured fixed variance (fp32, or fp64 inputs
        kept)."""
        dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
        var = torch.tensor(self.settings.variance, dtype=dtype, device=query.device).view(1, 1, 1, -1)
        return Beliefs(query.to(dtype), var), Beliefs(key.to(dtype), var)


def expand_beliefs(b: Beliefs, groups: int) -> Beliefs:
    """Key beliefs repeated for grouped query heads (GQA), for the explicit path."""
    if groups == 1:
        return b
    var = b.var if b.var.shape[1] == 1 else expand_kv(b.var, groups)
    phi = None if b.phi is None else expand_kv(b.phi, groups)
    return Beliefs(expand_kv(b.mu, groups), var, phi, b.per_block)


def row_bias(call: AttentionCall, mask4: torch.Tensor | None, rows: torch.Tensor, tk: int) -> torch.Tensor:
    """Additive `(B|1, H|1, len(rows), Tk)` float: -inf where a query row may not look, plus any bias."""
    device = rows.device
    vis = torch.ones(1, 1, len(rows), tk, dtype=torch.bool, device=device)
    if call.causal:
        vis = vis & (torch.arange(tk, device=device).view(1, -1) <= rows.view(-1, 1) + call.q_offset)
    if call.key_padding is not None:
        vis = vis & call.key_padding[:, None, None, :]
    if mask4 is not None:
        vis = vis & mask4[:, :, rows]
    bias = torch.zeros(vis.shape, device=device).masked_fill(~vis, float("-inf"))
    return bias if call.bias is None else bias + call.bias[..., rows, :]


def select_rows(b: Beliefs, rows) -> Beliefs:
    """The beliefs of some query positions (`rows`: a slice or an index tensor)."""
    var = b.var if b.var.shape[2] == 1 else b.var[:, :, rows]
    return Beliefs(b.mu[:, :, rows], var, None if b.phi is None else b.phi[:, :, rows], b.per_block)


def explicit_scores(qb: Beliefs, kb: Beliefs, settings: GaugeSettings) -> torch.Tensor:
    """`-KL(q_i || Omega_ij k_j) / kappa`, `(B, H, Tq, Tk)`, chunked over queries to bound the intermediate."""
    tq, tk, d = qb.mu.shape[2], kb.mu.shape[2], qb.mu.shape[3]
    step = max(1, EXPLICIT_CHUNK // max(1, tk * d * qb.mu.shape[0] * qb.mu.shape[1]))
    parts = [kl_explicit(select_rows(qb, slice(s, s + step)), kb, settings.layout) for s in range(0, tq, step)]
    return torch.cat(parts, 2) / -settings.kappa


def explicit_path(call, qb: Beliefs, kb: Beliefs, value, settings: GaugeSettings, mask4, p: float):
    """`(out (B, Tq, Hq, Dv), weights (B, Hq, Tq, Tk))` from the KL on the full grid."""
    scores = explicit_scores(qb, expand_beliefs(kb, call.groups), settings)
    if mask4 is not None:
        extra = torch.zeros(mask4.shape, dtype=scores.dtype, device=scores.device).masked_fill(~mask4, float("-inf"))
        call = AttentionCall(call.causal, call.key_padding, extra if call.bias is None else call.bias + extra,
                             call.q_offset, call.groups)
    weights = masked_softmax_weights(call, scores)
    mixed = F.dropout(weights, p) if p else weights
    out = mixed @ expand_kv(value, call.groups).to(weights.dtype)
    return out.transpose(1, 2), weights


def _sdpa_mask(call: AttentionCall, mask4, tq: int, tk: int, dtype, device):
    """`(attn_mask, is_causal, dead_rows)` for SDPA; no mask at all for plain causal/full attention."""
    if call.bias is None and call.key_padding is None and mask4 is None:
        if not call.causal or tq == 1:
            return None, False, None
        if tq == tk:
            return None, True, None
    vis = visible(call, tq, tk, device)
    if mask4 is not None:
        vis = vis & mask4
    if call.bias is not None:
        vis = vis & (call.bias > float("-inf"))
    dead = ~vis.any(-1, keepdim=True)  # rows that see nothing: let them see all, zero them afterwards (no NaN)
    vis = vis | dead
    if call.bias is None:
        return vis, False, dead
    bias = torch.where(vis, call.bias.to(dtype), torch.full((), float("-inf"), dtype=dtype, device=device))
    return bias.masked_fill(dead, 0.0), False, dead


def pad_width(needed: int, dv: int, config) -> int:
    """Width of the augmented vectors (and of v): the smallest multiple of 8 holding both, or
    `config.gauge_pad_width` if set (SDPA kernels run some widths, e.g. 96 or 128, faster than 72)."""
    width = max(-(-needed // 8) * 8, dv)
    want = getattr(config, "gauge_pad_width", None)
    if want is None:
        return width
    if isinstance(want, bool) or not isinstance(want, int) or want % 8 or want < width:
        raise HfAttnError(f"config.gauge_pad_width must be a multiple of 8 >= {width} (the augmented width for "
                          f"this head size), or None; got {want!r}.")
    return want


def free_key(key: torch.Tensor, inv_var: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The parameter-free form's key side: `k / t` in the key dtype and the key constant `c = -|k|^2_t / 2`
    `(..., 1)`, summed in fp32 (fp64 stays fp64) without full-size fp32 copies when every `t` is 1
    (`inv_var` None; else `inv_var` is 1/t per dim)."""
    if inv_var is None:
        acc = torch.promote_types(key.dtype, torch.float32)  # fp32 sums for 16-bit keys, fp64 stays fp64
        return key, -0.5 * torch.linalg.vector_norm(key, dim=-1, keepdim=True, dtype=acc).square()
    kf = key.float()
    return (kf * inv_var).to(key.dtype), -0.5 * (kf.square() * inv_var).sum(-1, keepdim=True)


def free_vectors(query, key, value, inv_var: torch.Tensor | None, split: bool, width: int):
    """Augmented `(q~, k~, v~)` of the parameter-free form in the input dtype, in few kernels and without
    full-size fp32 copies (at long T this prologue, not SDPA, was what set gauge apart from sdpa at width 72).

    Same algebra as `augmented` for identity frames and constant variances `t` (`free_key`):
    `q~ = [q, 1(, 1), 0...]`, `k~ = [k / t, c(_hi, c_lo), 0...]` with `c` shifted by `c_0`, `v~ = [v, 0...]`,
    all `width` wide.
    """
    d, dv, dtype = query.shape[-1], value.shape[-1], query.dtype
    extra = 2 if split else 1
    lead_q, lead_k = query.shape[:-1], key.shape[:-1]
    ks, c = free_key(key, inv_var)
    c = c - c[..., :1, :]
    if split:
        hi = c.to(torch.bfloat16).float()
        consts = [hi.to(dtype), (c - hi).to(dtype)]
    else:
        consts = [c.to(dtype)]
    ones, pad = query.new_ones(()).expand(*lead_q, extra), width - d - extra
    qa = torch.cat([query, ones, query.new_zeros(()).expand(*lead_q, pad)], -1)
    ka = torch.cat([ks, *consts, key.new_zeros(()).expand(*lead_k, pad)], -1)
    return qa, ka, F.pad(value, (0, width - dv))


_compiled_free_vectors = None


def _free_builder(config):
    """`free_vectors`, or its torch.compile'd form (one fused kernel per vector) if `config.gauge_compile`."""
    global _compiled_free_vectors
    if not getattr(config, "gauge_compile", False):
        return free_vectors
    if _compiled_free_vectors is None:
        _compiled_free_vectors = torch.compile(free_vectors, dynamic=True)
    return _compiled_free_vectors


def belief_vectors(qb: Beliefs, kb: Beliefs, value, settings: GaugeSettings, config):
    """Augmented `(q~, k~, v~)` from general beliefs (frames, per-token variances), in the value dtype."""
    dtype = value.dtype
    qa, ka = augmented(qb, kb, settings.layout, split_constant=dtype in (torch.bfloat16, torch.float16))
    width = pad_width(qa.shape[-1], value.shape[-1], config)  # flash kernels (CUDA, CPU) need equal widths
    pad = lambda x: F.pad(x.to(dtype), (0, width - x.shape[-1]))  # noqa: E731
    return pad(qa), pad(ka), pad(value)


def fast_path(call, qa, ka, v, dv: int, settings: GaugeSettings, mask4, p: float) -> torch.Tensor:
    """`(B, Tq, Hq, Dv)`: SDPA over augmented vectors with scale 1/kappa (the output's first dv dims)."""
    tq, tk = qa.shape[2], ka.shape[2]
    mask, is_causal, dead = _sdpa_mask(call, mask4, tq, tk, qa.dtype, qa.device)
    gqa = call.groups > 1 and mask is None
    if call.groups > 1 and not gqa:
        ka, v = expand_kv(ka, call.groups), expand_kv(v, call.groups)
    out = F.scaled_dot_product_attention(qa, ka, v, attn_mask=mask, dropout_p=p, is_causal=is_causal,
                                         scale=1.0 / settings.kappa, enable_gqa=gqa)[..., :dv]
    if dead is not None:
        out = out.masked_fill(dead, 0.0)
    return out.transpose(1, 2)


MASK_MEMO = "_hf_attn_gauge_fused"  # attribute of a 4D mask tensor: {causal: fused_call's answer for it}


def _kernel():
    """The Triton module (imported on first use: Triton is optional)."""
    from . import kernel

    return kernel


def fused_call(call: AttentionCall, mask4, query, value, p: float) -> tuple[bool, torch.Tensor | None]:
    """`(use the fused kernel, its key-padding mask)`. The kernel takes causality and key padding; other masks
    (T5's bias, any 4D mask that is more than those two), dropout, unequal q/v widths and code being compiled
    by torch.compile go to the SDPA path.
    A 4D bool mask is accepted when it equals causality plus the key padding read off it (an O(Tq x Tk)
    check that runs only when such a mask was built, i.e. with padding, once per mask and not per layer)."""
    d = query.shape[-1]
    if p or call.bias is not None or value.shape[-1] != d or d > 128 or not kernels_enabled(query):
        return False, None
    if torch.compiler.is_compiling():  # a compiled model traces SDPA whole; the kernel's launches would break graphs
        return False, None
    if mask4 is None:
        return True, call.key_padding
    if mask4.shape[1] != 1:
        return False, None
    memo = mask4.__dict__.setdefault(MASK_MEMO, {})  # transformers hands every layer of a forward the same mask
    if call.causal not in memo:
        padding = mask4[:, 0].any(-2)  # the keys some query sees
        want = visible(replace(call, key_padding=padding), *mask4.shape[-2:], mask4.device)
        memo[call.causal] = (torch.equal(mask4, want.expand_as(mask4)), padding)
    return memo[call.causal]


def fused_beliefs(call: AttentionCall, qb: Beliefs, kb: Beliefs, value, settings: GaugeSettings, padding):
    """The learned form through the fused kernel: rotated means in the value dtype, the key constant and the
    per-token-variance terms in fp32 (`augmented_parts`)."""
    parts = augmented_parts(qb, kb, settings.layout)
    extra = None if parts.q_extra is None else (parts.q_extra, parts.k_extra)
    return _kernel().gauge_flash(parts.q.to(value.dtype), parts.k.to(value.dtype), value, parts.c.squeeze(-1),
                                 1.0 / settings.kappa, call.causal, padding, extra)


@autocast_entry
def gauge_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers attention function for `attn_implementation="gauge"`.

    Returns `(out (B, Tq, Hq, D), weights or None)`; weights `(B, Hq, Tq, Tk)` with `output_attentions=True`.
    Accepts 2D key-padding masks, 4D bool masks (`sdpa_mask`), 4D float masks and T5's `position_bias`.
    """
    source = kwargs.pop("gauge_beliefs", None)
    mask4 = None
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.dtype == torch.bool:
        if attention_mask.shape[-2:] != (query.shape[2], key.shape[2]):
            raise HfAttnError(f"gauge: 4D attention mask {tuple(attention_mask.shape)} does not end in "
                              f"(q_len, kv_len) = ({query.shape[2]}, {key.shape[2]}).")
        mask4, attention_mask = attention_mask, None
    call = parse_call("gauge", module, query, key, value, attention_mask, kwargs)
    p = check_dropout("gauge", dropout, module)
    if source is None:
        source = ParameterFree(settings_from_config(getattr(module, "config", None), query.shape[-1], scaling))
    settings = source.settings
    store = getattr(module, "gauge_diagnostics", None)
    weights, qb, kb = None, None, None
    free = isinstance(source, ParameterFree) and not kwargs.get("output_attentions")
    if free:
        inv_var = None if all(v == 1.0 for v in settings.variance) else 1.0 / torch.tensor(
            [settings.variance[i] for i in settings.layout.block_of_dim()], device=query.device)
        fused, padding = fused_call(call, mask4, query, value, p)
        if fused:  # with unit variances the kernels form the key constant themselves (c None)
            ks, c = (key, None) if inv_var is None else free_key(key, inv_var)
            out = _kernel().gauge_flash(query, ks, value, None if c is None else c.squeeze(-1), 1.0 / settings.kappa,
                                        call.causal, padding)
        else:
            split = query.dtype in (torch.bfloat16, torch.float16)
            config = getattr(module, "config", None)
            width = pad_width(query.shape[-1] + 1 + split, value.shape[-1], config)
            qa, ka, v = _free_builder(config)(query, key, value, inv_var, split, width)
            out = fast_path(call, qa, ka, v, value.shape[-1], settings, mask4, p)
    else:
        qb, kb = source.beliefs(query, key)
        if kwargs.get("output_attentions") or not (qb.per_block and kb.per_block):
            out, weights = explicit_path(call, qb, kb, value, settings, mask4, p)
            weights = weights.to(query.dtype)
        else:
            fused, padding = fused_call(call, mask4, query, value, p)
            if fused and settings.layout.n_blocks <= _kernel().EXTRA_WIDTH:
                out = fused_beliefs(call, qb, kb, value, settings, padding)
            else:
                qa, ka, v = belief_vectors(qb, kb, value, settings, getattr(module, "config", None))
                out = fast_path(call, qa, ka, v, value.shape[-1], settings, mask4, p)
    if store is not None:
        if qb is None:
            qb, kb = source.beliefs(query.detach(), key.detach())
        store.record(module, call, mask4, qb, kb, settings)
    return out.to(query.dtype).contiguous(), weights
