"""Adapter-style wrappers (imported as `hf_attn.adapters`): one folder per wrapper, one shared API."""
from .base import (
    WrapperConfig,
    WrapperLayer,
    WrapperSpec,
    find_targets,
    list_wrappers,
    load_wrapper,
    read_wrapper_config,
    register_wrapper,
    replace_module,
    save_wrapper,
    unwrap,
    wrap,
    wrapper_state_dict,
)
from .gauge import GaugeConfig  # noqa: E402  (registers the gauge wrapper)
from .prismatic import PrismaticConfig, force_expert, routing_metrics  # noqa: E402  (registers "prismatic")
from . import modulators  # noqa: F401,E402  (registers residual_modulator and field_modulator)

__all__ = [
    "GaugeConfig",
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
