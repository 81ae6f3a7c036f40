"""`apply` for the linearize wrapper (add learned parts to every attention module, switch to the variant) and
`set_window_mix`, the window-only ablation switch."""
from __future__ import annotations

import math
from typing import Callable

import torch

from hf_attn.attention.common import PARTS_ATTR
from hf_attn.attention.performer.features import layer_settings, random_features
from hf_attn.attention.window import checked_mix, set_window
from hf_attn.utils import HfAttnError, set_attn_implementation

from ..base import WrapperSpec, attention_modules, head_geometry, register_wrapper
from .config import LinearizeConfig
from .layer import LinearizeParts


def _logit(p: float) -> float:
    return -math.inf if p <= 0 else math.inf if p >= 1 else math.log(p / (1 - p))


def _mix_logit(module: torch.nn.Module, q_heads: int, config: LinearizeConfig) -> torch.Tensor | None:
    """`(Hq,)` logits at `logit(config.hf_attn_window_mix)` when the model has a window and the share learns."""
    cfg = module.config
    if not (getattr(cfg, "hf_attn_window", 0) or 0) or not config.learn_window_mix:
        return None
    mix = checked_mix("linearize", getattr(cfg, "hf_attn_window_mix", 0.1))
    return torch.full((q_heads,), _logit(mix))


def build_parts(module: torch.nn.Module, config: LinearizeConfig) -> LinearizeParts:
    """The parts for one attention module, at the values that reproduce the parameter-free variant."""
    q_heads, kv_heads, head_dim, _ = head_geometry(module)
    logit = _mix_logit(module, q_heads, config)
    if config.variant == "performer":
        m, seed = layer_settings(module)
        features = random_features(head_dim, m, seed, "cpu").expand(kv_heads, m, head_dim).clone()
        return LinearizeParts(features=features, window_mix_logit=logit)
    width = config.binding_dim or head_dim
    if width < head_dim or head_dim % 2:
        raise HfAttnError(f"linearize: holo needs an even head_dim and binding_dim >= head_dim; this model has "
                          f"head_dim {head_dim}, binding_dim {width}. Pass binding_dim >= {head_dim} (even) or "
                          "use variant='performer'.")
    eye = torch.eye(head_dim, width)
    return LinearizeParts(q_map=eye.expand(q_heads, -1, -1).clone(), k_map=eye.expand(kv_heads, -1, -1).clone(),
                          window_mix_logit=logit)


def apply(model: torch.nn.Module, config: LinearizeConfig) -> list[Callable[[], None]]:
    """Build every module's parts first (a refusal leaves the model untouched), then attach them and switch."""
    names = attention_modules(model, config.target_modules, "linearize")
    modules = [model.get_submodule(n) for n in names]
    taken = [n for n, m in zip(names, modules) if hasattr(m, PARTS_ATTR)]
    if taken:
        raise HfAttnError(f"{taken[:3]} already carry learned parts ({PARTS_ATTR}); call hf_attn.unwrap(model) first.")
    built = [build_parts(m, config).to(next(m.parameters()).device) for m in modules]
    undo = []
    for module, parts in zip(modules, built):
        module.add_module(PARTS_ATTR, parts)
        undo.append(lambda module=module: delattr(module, PARTS_ATTR))
    set_attn_implementation(model, config.variant)  # unwrap restores the base model's implementation
    return undo


def set_window_mix(model: torch.nn.Module, mix: float) -> torch.nn.Module:
    """Set the variant's share in the window hybrid to `mix` in [0, 1] on every layer; returns the model.

    Writes `config.hf_attn_window_mix` and, on a model wrapped with learned shares, every `window_mix_logit`
    (`logit(mix)`). `mix=0.0` is the window-only ablation: exact sliding-window softmax, the variant's parts
    unused (a logit of -inf has zero gradient, so training keeps it there).
    """
    checked_mix("set_window_mix", mix)
    size = getattr(getattr(model, "config", None), "hf_attn_window", 0) or 0
    if not size:
        raise HfAttnError("set_window_mix needs a window hybrid: call hf_attn.set_window(model, 64) first (and wrap "
                          "after it, for learned shares).")
    set_window(model, size, mix=mix, sinks=None)  # keeps the sinks as they are
    with torch.no_grad():
        for parts in model.modules():
            if isinstance(parts, LinearizeParts) and parts.window_mix_logit is not None:
                parts.window_mix_logit.fill_(_logit(mix))
    return model


register_wrapper(WrapperSpec("linearize", LinearizeConfig, apply, attn_implementation=lambda c: c.variant))
