"""The parameter-free knobs of gauge attention (kappa, irrep_spec, variance), defaults in one place.

Read from a model config as `config.gauge_kappa`, `config.gauge_irrep_spec`, `config.gauge_variance`, or
from a `GaugeConfig`; both resolve here to one checked `GaugeSettings` per head size.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence, Union

from ...utils import HfAttnError
from .irreps import IrrepLayout, IrrepSpecLike, irrep_layout

DEFAULT_KAPPA: float | None = None  # None: 1 / the model's own logit scaling (sqrt(head_dim) for Llama)
DEFAULT_VARIANCE = 1.0
VarianceLike = Union[float, Sequence[float]]


@dataclass(frozen=True)
class GaugeSettings:
    """Resolved knobs for one head size: temperature, irrep layout, one variance per block."""

    kappa: float
    layout: IrrepLayout
    variance: tuple[float, ...]  # one per block of `layout.blocks`


def check_kappa(kappa: float | None) -> None:
    """Refuse a kappa that is not a finite number > 0 (None means 1/scaling)."""
    if kappa is not None and not (isinstance(kappa, (int, float)) and math.isfinite(kappa) and kappa > 0):
        raise HfAttnError(f"gauge kappa must be a finite number > 0 (or None for 1/scaling), got {kappa!r}.")


def check_variance(variance: VarianceLike) -> None:
    """Refuse a variance that is not a positive number or a non-empty list of them."""
    values = [variance] if isinstance(variance, (int, float)) else list(variance)
    if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
        raise HfAttnError(
            f"gauge variance must be a number > 0 or a list of them (one per irrep block), got {variance!r}."
        )


def _hashable(x):
    return tuple(_hashable(v) for v in x) if isinstance(x, (list, tuple)) else x


def resolve(kappa: float | None, irrep_spec: IrrepSpecLike, variance: VarianceLike, head_dim: int,
            scaling: float | None) -> GaugeSettings:
    """Check the knobs and resolve them for heads of `head_dim` with the model's `scaling` (None: 1/sqrt(D))."""
    return _resolve(kappa, _hashable(irrep_spec), _hashable(variance), head_dim, scaling)


@functools.lru_cache(maxsize=256)
def _resolve(kappa, irrep_spec, variance, head_dim, scaling) -> GaugeSettings:
    check_kappa(kappa)
    check_variance(variance)
    layout = irrep_layout(head_dim, irrep_spec)
    n = layout.n_blocks
    if isinstance(variance, (int, float)):
        per_block = (float(variance),) * n
    elif len(variance) == n:
        per_block = tuple(float(v) for v in variance)
    else:
        raise HfAttnError(
            f"gauge variance has {len(variance)} values but irrep_spec {layout} in head_dim {head_dim} has {n} "
            f"blocks ({', '.join(layout.labels())}); give one number or one value per block."
        )
    if kappa is None:
        kappa = 1.0 / scaling if scaling else math.sqrt(head_dim)
    return GaugeSettings(float(kappa), layout, per_block)


def settings_from_config(config, head_dim: int, scaling: float | None) -> GaugeSettings:
    """Settings from a model config's `gauge_*` attributes (missing ones take the defaults above)."""
    return resolve(
        getattr(config, "gauge_kappa", DEFAULT_KAPPA),
        getattr(config, "gauge_irrep_spec", None),
        getattr(config, "gauge_variance", DEFAULT_VARIANCE),
        head_dim,
        scaling,
    )
