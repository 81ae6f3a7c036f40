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
from . import modulators  # noqa: F401,E402  (registers residual_modulator and field_modulator)

__all__ = [
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
