"""Geometric residual and field modulators for frozen T5 / Llama / Qwen models (docs/modulators.md)."""
from .config import FieldModulatorConfig, ResidualModulatorConfig
from .field import GeometricFieldModulator, KSimplexChannel
from .health import GeometryHealthWarning, find_modulator, modulator_health
from .residual import GeometricResidualModulator
from .wrap import find_stacks

__all__ = [
    "FieldModulatorConfig",
    "GeometricFieldModulator",
    "GeometricResidualModulator",
    "GeometryHealthWarning",
    "KSimplexChannel",
    "ResidualModulatorConfig",
    "find_modulator",
    "find_stacks",
    "modulator_health",
]
