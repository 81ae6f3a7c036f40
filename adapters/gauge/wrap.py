"""`apply` for the gauge wrapper: find attention modules, wrap each with learned beliefs, switch to 'gauge'."""
from __future__ import annotations

from typing import Callable

import torch

from hf_attn.utils import set_attn_implementation

from ..base import WrapperSpec, attention_modules, head_geometry, register_wrapper, replace_module
from .config import GaugeConfig
from .layer import BeliefMaps, GaugeAttention


def apply(model: torch.nn.Module, config: GaugeConfig) -> list[Callable[[], None]]:
    """Attach learned belief maps to every targeted attention module; returns the undo callbacks."""
    undo = []
    for name in attention_modules(model, config.target_modules, "gauge", skip=(GaugeAttention,)):
        base = model.get_submodule(name)
        q_heads, kv_heads, head_dim, scaling = head_geometry(base)
        maps = BeliefMaps(config.settings(head_dim, scaling), q_heads, kv_heads, config.learn_frames,
                          config.learn_variance, config.variance_mode, config.init_std)
        device = next(base.parameters()).device
        undo.append(replace_module(model, name, GaugeAttention(base, maps.to(device))))
    set_attn_implementation(model, "gauge")  # unwrap restores the base model's implementation
    return undo


register_wrapper(WrapperSpec("gauge", GaugeConfig, apply, attn_implementation="gauge"))
