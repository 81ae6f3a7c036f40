"""Learned gauge attention as an adapter: `hf_attn.wrap(model, GaugeConfig())`."""
from .config import GaugeConfig
from .layer import BeliefMaps, GaugeAttention, HeadLinear
from .wrap import apply

__all__ = ["BeliefMaps", "GaugeAttention", "GaugeConfig", "HeadLinear", "apply"]
