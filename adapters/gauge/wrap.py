"""`apply` for the gauge wrapper: find attention modules, wrap each with learned beliefs, switch to 'gauge'."""
from __future__ import annotations

from typing import Callable

import torch

from hf_attn.utils import HfAttnError, set_attn_implementation

from ..base import WrapperSpec, find_targets, register_wrapper, replace_module
from .config import GaugeConfig
from .layer import BeliefMaps, GaugeAttention


def _is_attention(module: torch.nn.Module) -> bool:
    return (type(module).__name__.endswith("Attention") and hasattr(module, "config")
            and (hasattr(module, "head_dim") or hasattr(module, "key_value_proj_dim")))


def attention_modules(model: torch.nn.Module, targets) -> list[str]:
    """Names of the attention modules to wrap: `targets` if given, else every transformers attention module."""
    if targets is not None:
        names = find_targets(model, targets)
        bad = [n for n in names if not _is_attention(model.get_submodule(n))]
        if bad:
            raise HfAttnError(f"gauge wraps attention modules (q/k/v -> attention function); {bad[:3]} are not. "
                              "Target e.g. 'self_attn' (Llama/Qwen/Mistral) or 'SelfAttention' (T5).")
        return names
    names = [n for n, m in model.named_modules() if _is_attention(m) and not isinstance(m, GaugeAttention)]
    if not names:
        raise HfAttnError(f"No attention module found in {type(model).__name__}; pass target_modules explicitly.")
    return names


def head_geometry(module: torch.nn.Module) -> tuple[int, int, int, float | None]:
    """(query heads, key/value heads, head_dim, scaling) of a transformers attention module."""
    cfg = module.config
    head_dim = getattr(module, "head_dim", None) or module.key_value_proj_dim
    q_heads = getattr(module, "n_heads", None) or cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or q_heads
    return q_heads, kv_heads, head_dim, getattr(module, "scaling", None)


def apply(model: torch.nn.Module, config: GaugeConfig) -> list[Callable[[], None]]:
    """Attach learned belief maps to every targeted attention module; returns the undo callbacks."""
    undo = []
    for name in attention_modules(model, config.target_modules):
        base = model.get_submodule(name)
        q_heads, kv_heads, head_dim, scaling = head_geometry(base)
        maps = BeliefMaps(config.settings(head_dim, scaling), q_heads, kv_heads, config.learn_frames,
                          config.learn_variance, config.variance_mode, config.init_std)
        device = next(base.parameters()).device
        undo.append(replace_module(model, name, GaugeAttention(base, maps.to(device))))
    set_attn_implementation(model, "gauge")  # unwrap restores the base model's implementation
    return undo


register_wrapper(WrapperSpec("gauge", GaugeConfig, apply, attn_implementation="gauge"))
