"""Adapter-style wrappers (imported as `hf_attn.adapters`): one folder per wrapper, one shared API."""
from .base import (
    WrapperConfig,
    WrapperLayer,
    WrapperSpec,
    attention_modules,
    find_targets,
    head_geometry,
    list_wrappers,
    load_wrapper,
    read_wrapper_config,
    register_wrapper,
    replace_module,
    save_wrapper,
    unwrap,
    wrap,
    wrapper_parameters,
    wrapper_state_dict,
)
from .gauge import GaugeConfig  # noqa: E402  (registers the gauge wrapper)
from .prismatic import PrismaticConfig, force_expert, routing_metrics  # noqa: E402  (registers "prismatic")
from . import modulators  # noqa: F401,E402  (registers residual_modulator and field_modulator)
from .linearize import LinearizeConfig, set_window_mix  # noqa: E402  (registers "linearize")

__all__ = [
    "GaugeConfig",
    "LinearizeConfig",
    "set_window_mix",
    "attention_modules",
    "head_geometry",
    "wrapper_parameters",
    "PrismaticConfig",
    "force_expert",
    "routing_metrics",
    "WrapperConfig",
    "WrapperLayer",
    "WrapperSpec",
    "find_targets",
    "list_wrappers",
    "load_wrapper",
    "read_wrapper_config",
    "register_wrapper",
    "replace_module",
    "save_wrapper",
    "unwrap",
    "wrap",
    "wrapper_state_dict",
]

from . import tt  # noqa: E402,F401  (registers the "tt" wrapper)
