"""The learned gauge layers: per-head maps from a head's mean to its frame and variances, and the wrapper.

Frames and variances are functions of the head's own query (query side) or key (key side) vector, not of the
hidden state: keys are what the KV cache keeps, so cached decoding recomputes the key side exactly and
equals the full forward.
"""
from __future__ import annotations

import math

import torch

from hf_attn.attention.gauge import Beliefs
from hf_attn.attention.gauge.settings import GaugeSettings

from ..base import WrapperLayer

LOGVAR_LIMIT = 20.0  # log-variances are clamped to +-20 so exp never overflows


class HeadLinear(torch.nn.Module):
    """`y[b, h, t] = x[b, h, t] @ weight[h] + bias[h]`: one small linear map per head."""

    def __init__(self, heads: int, dim: int, out: int, bias_value: torch.Tensor | float, init_std: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(heads, dim, out) * init_std)
        self.bias = torch.nn.Parameter(torch.zeros(heads, out) + bias_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply each head's own linear map to `x (B, H, T, D)`."""
        return torch.einsum("bhtd,hdo->bhto", x, self.weight.to(x.dtype)) + self.bias.to(x.dtype)[:, None]


class BeliefMaps(torch.nn.Module):
    """Frames `phi` (3 per token) and log-variances (one per block, or per dim) for both attention sides."""

    def __init__(self, settings: GaugeSettings, q_heads: int, kv_heads: int, learn_frames: bool,
                 learn_variance: bool, variance_mode: str, init_std: float):
        super().__init__()
        self.settings = settings
        layout = settings.layout
        d = layout.head_dim
        self.per_block = variance_mode == "block"
        log_var = torch.tensor([math.log(v) for v in settings.variance])
        if not self.per_block:
            log_var = log_var[layout.block_of_dim()]
        self.register_buffer("log_var", log_var, persistent=False)
        self.q_phi = HeadLinear(q_heads, d, 3, 0.0, init_std) if learn_frames else None
        self.k_phi = HeadLinear(kv_heads, d, 3, 0.0, init_std) if learn_frames else None
        self.q_var = HeadLinear(q_heads, d, len(log_var), log_var, init_std) if learn_variance else None
        self.k_var = HeadLinear(kv_heads, d, len(log_var), log_var, init_std) if learn_variance else None

    def _side(self, mu: torch.Tensor, phi_map, var_map) -> Beliefs:
        phi = phi_map(mu) if phi_map is not None else None
        if var_map is not None:
            var = var_map(mu).clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT).exp()
        else:
            var = self.log_var.to(mu.dtype).exp().view(1, 1, 1, -1)
        return Beliefs(mu, var, phi, self.per_block)

    def beliefs(self, query: torch.Tensor, key: torch.Tensor) -> tuple[Beliefs, Beliefs]:
        """Query and key beliefs with frames (and variances) predicted from the means by the learned maps (fp32 or
        fp64)."""
        dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
        return (self._side(query.to(dtype), self.q_phi, self.q_var),
                self._side(key.to(dtype), self.k_phi, self.k_var))


class GaugeAttention(WrapperLayer):
    """Stands in for one attention module; hands its `BeliefMaps` to the gauge attention function."""

    def __init__(self, base_layer: torch.nn.Module, maps: BeliefMaps):
        super().__init__()
        self.base_layer = base_layer
        self.gauge_maps = maps

    def forward(self, *args, **kwargs):
        """Run the base attention layer with the learned belief maps passed to the gauge kernel."""
        return self.base_layer(*args, gauge_beliefs=self.gauge_maps, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("base_layer"), name)
