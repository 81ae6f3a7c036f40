"""Simplex and spectrum math shared by the geometric modulators and the weight-geometry probes."""
from .simplex import (
    CV_BAND,
    cayley_menger_features,
    cayley_menger_volume,
    cayley_menger_volume_sq,
    pentachoron_cv,
    regular_simplex,
    regular_simplex_volume,
)
from .spectrum import participation_ratio, singular_value_stats, variance_dims

__all__ = [
    "CV_BAND",
    "cayley_menger_features",
    "cayley_menger_volume",
    "cayley_menger_volume_sq",
    "pentachoron_cv",
    "participation_ratio",
    "regular_simplex",
    "regular_simplex_volume",
    "singular_value_stats",
    "variance_dims",
]
