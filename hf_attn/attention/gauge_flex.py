"""The parameter-free gauge form on FlexAttention: the key constant as a score bias at head_dim width.

With identity frames and one variance `t` per dimension for every token, `-KL(q_i || k_j) / kappa` is
`(q_i . k_j / t - |k_j|^2_t / 2) / kappa` plus terms of `i` alone, which softmax drops. SDPA can carry the
per-key constant only as an extra dimension (width 72 for head_dim 64, a kernel 0.65x as fast as sdpa's at
16k on the H100: docs/gauge.md); FlexAttention adds it as a per-key score bias inside a head_dim-wide flash
loop, fp32 and with its gradient, and never materialises `T x T`.

`config.gauge_backend`: "auto" (default) takes this path on CUDA for causal self-attention without padding,
extra bias or dropout; "sdpa" never does; "flex" insists and says why a call cannot take it. FlexAttention
has no CPU backward, so on the CPU it serves inference only (unfused, for tests).
"""
from __future__ import annotations

import functools

import torch

from ..utils import HfAttnError
from .common import AttentionCall

BACKENDS = ("auto", "sdpa", "flex")


def backend(config) -> str:
    """`config.gauge_backend`, checked (missing -> "auto")."""
    name = getattr(config, "gauge_backend", "auto")
    if name not in BACKENDS:
        raise HfAttnError(f"config.gauge_backend must be one of {BACKENDS}, got {name!r}.")
    return name


def _flex_missing() -> str | None:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return f"FlexAttention is not in torch {torch.__version__} (needs >= 2.5)"
    return None


def refusal(call: AttentionCall, query: torch.Tensor, key: torch.Tensor, mask4, p: float) -> str | None:
    """Why this call cannot take the flex path, or None if it can."""
    if not call.causal or query.shape[2] != key.shape[2]:
        return "it serves causal self-attention only (no encoder or cached-prefix calls)"
    if call.key_padding is not None or mask4 is not None or call.bias is not None:
        return "padding masks and additive biases go through SDPA"
    if p:
        return "attention dropout goes through SDPA"
    if not query.is_cuda and torch.is_grad_enabled() and (query.requires_grad or key.requires_grad):
        return "FlexAttention has no CPU backward"
    return _flex_missing()


def use_flex(config, call: AttentionCall, query, key, mask4, p: float) -> bool:
    """Whether `gauge_attention_forward` takes `flex_forward` for this call (see the module docstring)."""
    name = backend(config)
    if name == "sdpa":
        return False
    why = refusal(call, query, key, mask4, p)
    if name == "flex" and why is not None:
        raise HfAttnError(f"gauge_backend='flex' cannot serve this call: {why}. Use 'auto' or 'sdpa'.")
    return why is None and (name == "flex" or query.is_cuda)


@functools.lru_cache(maxsize=16)
def _causal_blocks(t: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(lambda b, h, qi, kv: qi >= kv, None, None, t, t, device=device)


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def flex_forward(query, key, value, inv_var: torch.Tensor | None, kappa: float, groups: int) -> torch.Tensor:
    """`(B, T, Hq, Dv)` causal parameter-free gauge attention: `softmax_j((q_i . k_j/t + c_j) / kappa)`,
    `c_j = -|k_j|^2_t / 2` kept in fp32 and added by the kernel; `inv_var` = 1/t per dim (None: all 1)."""
    from torch.nn.attention.flex_attention import flex_attention

    acc = torch.promote_types(key.dtype, torch.float32)
    if inv_var is None:
        ks = key
        c = torch.linalg.vector_norm(key, dim=-1, dtype=acc).square()
    else:
        kf = key.to(acc)
        ks = (kf * inv_var).to(key.dtype)
        c = (kf.square() * inv_var).sum(-1)
    bias = c * (-0.5 / kappa)  # (B, Hkv, T)

    def score_mod(score, b, h, qi, kv):
        return score + bias[b, h // groups, kv]

    fn = _compiled_flex() if query.is_cuda else flex_attention
    out = fn(query, ks, value, score_mod=score_mod, block_mask=_causal_blocks(query.shape[2], str(query.device)),
             scale=1.0 / kappa, enable_gqa=groups > 1)
    return out.transpose(1, 2)
