"""SO(3) gauge math for gauge attention: Wigner-D matrices, irrep layouts, settings, Gaussian beliefs."""
from .beliefs import Beliefs, augmented, kl_explicit, rotate_into_frames
from .irreps import DEFAULT_IRREP_SPEC, IrrepLayout, irrep_layout, parse_irrep_spec
from .settings import DEFAULT_KAPPA, DEFAULT_VARIANCE, GaugeSettings, resolve, settings_from_config
from .so3 import MAX_L, generators, wigner_d

__all__ = [
    "Beliefs", "augmented", "kl_explicit", "rotate_into_frames", "DEFAULT_IRREP_SPEC", "IrrepLayout",
    "irrep_layout", "parse_irrep_spec", "DEFAULT_KAPPA", "DEFAULT_VARIANCE", "GaugeSettings", "resolve",
    "settings_from_config", "MAX_L", "generators", "wigner_d",
]
