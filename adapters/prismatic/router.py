"""The router: one expert distribution per sequence, and the context it needs to stay causal under a cache.

Why per sequence, and why the *first real token* by default: the merged parameters must be one set per
sequence for the module to run once (SMEAR), and any summary of a decoder's sequence that includes token t
would let positions < t depend on it (future leakage), differ between a padded batch and a single run, or
differ between a full forward and cached decoding. The first real token is the only summary available at
every position; in encoders (no causality) the mean of the real tokens is used. Under the KV cache a
decoder module reuses the routing computed at prefill, so cached generation equals the full forward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hf_attn.utils import cache_argument
from .config import PrismaticConfig


@dataclass
class RoutingContext:
    """What the wrapped model's top-level forward was called with (filled by a forward pre-hook)."""

    attention_mask: torch.Tensor | None = None
    decoder_attention_mask: torch.Tensor | None = None
    past_len: int = 0
    encoder_decoder: bool = False

    def capture(self, module, args, kwargs) -> None:
        """Forward pre-hook on the model: keep the masks and the cache length the routers need."""
        self.attention_mask = kwargs.get("attention_mask")
        self.decoder_attention_mask = kwargs.get("decoder_attention_mask")
        cache = cache_argument(kwargs)
        self.past_len = int(cache.get_seq_length()) if cache is not None else 0

    def mask_for(self, role: str, length: int) -> torch.Tensor | None:
        """The 2D key-padding mask matching a `length`-token input of a module in `role`."""
        decoder_side = role == "decoder" and self.encoder_decoder
        mask = self.decoder_attention_mask if decoder_side else self.attention_mask
        if mask is None or mask.dim() != 2 or mask.shape[1] < length:
            return None
        return mask[:, -length:].bool()


class Router(torch.nn.Module):
    """Linear map of a pooled hidden state to K expert weights (softmax with temperature)."""

    def __init__(self, in_features: int, config: PrismaticConfig, pooling: str):
        super().__init__()
        self.num_experts = config.num_experts
        self.temperature = config.router_temperature
        self.pooling = pooling
        self.proj = torch.nn.Linear(in_features, config.num_experts)
        self.forced: int | None = None  # set by force_expert(): one-hot routing for tests and ablations
        with torch.no_grad():
            self.proj.weight.zero_()  # starts input-independent; learns input dependence
            self.proj.bias.copy_(initial_logits(config))

    def pool(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """`(B, T, H)` -> `(B, H)` by this router's pooling, honouring padding."""
        if self.pooling == "mean":
            if mask is None:
                return x.mean(1)
            m = mask.to(x.dtype).unsqueeze(-1)
            return (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        first = mask.to(torch.int8).argmax(1) if mask is not None else torch.zeros(x.shape[0], dtype=torch.long)
        return x[torch.arange(x.shape[0], device=x.device), first.to(x.device)]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Routing `(B, K)` in float32 for hidden states `x` `(B, T, H)`."""
        if self.forced is not None:
            return F.one_hot(torch.full((x.shape[0],), self.forced, device=x.device), self.num_experts).float()
        pooled = self.pool(x, mask)
        logits = F.linear(pooled.to(self.proj.weight.dtype), self.proj.weight, self.proj.bias).float()
        return torch.softmax(logits / self.temperature, dim=-1)


def initial_logits(config: PrismaticConfig) -> torch.Tensor:
    """Bias giving expert 0 `router_init_weight` (clean) or every expert 1/K (uniform) at T = 1."""
    k = config.num_experts
    if config.router_init == "uniform":
        return torch.zeros(k)
    p0 = config.router_init_weight
    rest = math.log((1 - p0) / (k - 1))
    return torch.tensor([math.log(p0)] + [rest] * (k - 1)) * config.router_temperature
