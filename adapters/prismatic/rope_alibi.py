"""Prismatic attention block for Llama/Qwen2/Qwen3/Mistral: soft-merged projections, RoPE or ALiBi per sequence.

v3: expert i has position encoding `architectures[i % len]`; the projections (and Qwen3's q/k
norms) are soft-merged over the expert views, and the position type is hard-gated per sequence: RoPE when
the RoPE experts' total routing weight is > 0.5, else ALiBi. v2 on a whole attention block uses the same
class with RoPE for every expert.

- When every sequence of the batch takes RoPE, the block runs the model's own attention function with the
  model's own mask (the stock path: same kernel, same numbers).
- Otherwise attention runs on SDPA with a float mask built here (causality, padding and any 4D mask of the
  model via `parse_call`, plus `-slope_h * (i - j)` on the ALiBi sequences; i, j are cache indices, so
  left padding does not shift distances between real tokens).
- KV cache: each sequence caches its keys *after* its own position encoding (rotated for RoPE, raw for
  ALiBi). The gate of a sequence cannot change while its cache lives, because decoder modules reuse the
  routing computed at prefill (router.py), so the cache always holds what the chosen encoding needs.
- The hard gate has no gradient; the chosen output is multiplied by `p / p.detach()` (p = weight of the
  chosen type; value exactly 1) so the router still learns which type it prefers (Switch-style).
"""
from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaAttention, apply_rotary_pos_emb
from transformers.models.mistral.modeling_mistral import MistralAttention
from transformers.models.qwen2.modeling_qwen2 import Qwen2Attention
from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from hf_attn.attention.common import autocast_inputs, expand_kv, parse_call, visible
from hf_attn.utils import cache_argument

from .config import PrismaticConfig
from .layer import PrismaticBase, call_with
from .router import RoutingContext

ATTENTION_CLASSES = (LlamaAttention, MistralAttention, Qwen2Attention, Qwen3Attention)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Head slopes of Press et al. (2022): geometric from 2^(-8/n); non-powers of two interleave the next power."""
    def powers(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = powers(closest)
    if closest != num_heads:
        slopes += powers(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(num_heads: int, q_offset: int, tq: int, tk: int, device) -> torch.Tensor:
    """`(H, Tq, Tk)` additive bias `-slope_h * (i - j)` for query cache index i and key index j."""
    qpos = torch.arange(tq, device=device, dtype=torch.float32) + q_offset
    distance = qpos[:, None] - torch.arange(tk, device=device, dtype=torch.float32)[None, :]
    return -alibi_slopes(num_heads).to(device)[:, None, None] * distance


def _sliding_window(base: torch.nn.Module) -> int | None:
    if hasattr(base, "sliding_window"):
        return base.sliding_window
    return getattr(base.config, "sliding_window", None) if isinstance(base, MistralAttention) else None


class PrismaticAttention(PrismaticBase):
    """Stands in for a decoder attention module; `base_layer` keeps the original (and its projections)."""

    def __init__(self, base: torch.nn.Module, config: PrismaticConfig, context: RoutingContext, role: str):
        super().__init__(base, config, context, role)
        k = config.num_experts
        rope = [config.version == "v2" or config.architecture(i) == "rope" for i in range(k)]
        device = next(base.parameters()).device
        self.register_buffer("rope_experts", torch.tensor(rope, device=device), persistent=False)
        self.always_rope = all(rope)

    def _project(self, name: str, params: dict, batched: bool, x: torch.Tensor) -> torch.Tensor:
        sub = {key[len(name) + 1:]: v for key, v in params.items() if key.startswith(name + ".")}
        return call_with(getattr(self.base_layer, name), sub, batched, x)

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        """The base attention with merged expert projections and, per sequence, RoPE or ALiBi as the routing picks."""
        base = self.base_layer
        cache = cache_argument(kwargs)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values")}
        routing = self.route(hidden_states)
        params, batched = self.merged_params(routing)
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, base.head_dim)
        q = self._project("q_proj", params, batched, hidden_states).view(hidden_shape)
        k = self._project("k_proj", params, batched, hidden_states).view(hidden_shape)
        v = self._project("v_proj", params, batched, hidden_states).view(hidden_shape).transpose(1, 2)
        if hasattr(base, "q_norm"):
            q, k = self._project("q_norm", params, batched, q), self._project("k_norm", params, batched, k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)

        cos, sin = position_embeddings
        q_rot, k_rot = apply_rotary_pos_emb(q, k, cos, sin)
        if self.always_rope:
            use_rope, all_rope = None, True
        else:
            p_rope = (routing * self.rope_experts).sum(-1)
            use_rope = p_rope > 0.5
            all_rope = bool(use_rope.all())
        if all_rope:
            q, k = q_rot, k_rot
        else:
            gate = use_rope.view(-1, 1, 1, 1)
            q, k = torch.where(gate, q_rot, q), torch.where(gate, k_rot, k)
        if cache is not None:
            k, v = cache.update(k, v, base.layer_idx)

        window = _sliding_window(base)
        extra = {"sliding_window": window} if window is not None else {}
        dropout = base.attention_dropout if self.training else 0.0
        if all_rope:
            default = sys.modules[type(base).__module__].eager_attention_forward
            attend = ALL_ATTENTION_FUNCTIONS.get_interface(base.config._attn_implementation, default)
            out, weights = attend(base, q, k, v, attention_mask, dropout=dropout, scaling=base.scaling,
                                  **extra, **kwargs)
        else:
            out, weights = self._alibi_attention(q, k, v, attention_mask, ~use_rope, dropout, {**kwargs, **extra})
        if use_rope is not None and torch.is_grad_enabled() and routing.requires_grad:
            chosen = torch.where(use_rope, p_rope, 1 - p_rope)
            out = out * (chosen / chosen.detach()).to(out.dtype).view(-1, 1, 1, 1)
        out = out.reshape(*input_shape, -1).contiguous()
        return self._project("o_proj", params, batched, out), weights

    def _alibi_attention(self, q, k, v, attention_mask, alibi_rows, dropout, kwargs):
        """SDPA with a float mask: model mask + ALiBi on the sequences in `alibi_rows` `(B,)` bool. Under
        autocast q/k/v take its dtype first, as SDPA would cast them (RoPE'd q/k may be fp32 while v is not)."""
        q, k, v = autocast_inputs(q, k, v)
        call = parse_call("prismatic-alibi", self.base_layer, q, k, v, attention_mask, kwargs)
        b, h, tq, _ = q.shape
        tk = k.shape[2]
        vis = visible(call, tq, tk, q.device)
        bias = torch.zeros(vis.shape, dtype=torch.float32, device=q.device).masked_fill(~vis, float("-inf"))
        if call.bias is not None:
            bias = bias + call.bias
        alibi = alibi_bias(h, call.q_offset, tq, tk, q.device)
        bias = bias + alibi_rows.view(-1, 1, 1, 1).float() * alibi
        # rows that see no key (queries on left padding) would give NaN; let them see everything instead.
        bias = bias.masked_fill(torch.isinf(bias).all(-1, keepdim=True), 0.0)
        out = F.scaled_dot_product_attention(
            q, expand_kv(k, call.groups), expand_kv(v, call.groups), attn_mask=bias.to(q.dtype),
            dropout_p=dropout, scale=self.base_layer.scaling,
        )
        return out.transpose(1, 2), None
