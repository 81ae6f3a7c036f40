"""Apply/merge for the TT wrapper and its report (parameters and reconstruction error per module)."""
from __future__ import annotations

from typing import Any, Callable

import torch

from hf_attn.utils import HfAttnError

from ..base import WrapperSpec, find_targets, register_wrapper, replace_module

from .config import TTConfig
from .layer import TTLinear


def apply(model: torch.nn.Module, config: TTConfig) -> list[Callable[[], None]]:
    """Replace every targeted nn.Linear by a `TTLinear` initialised by TT-SVD of its weight."""
    names = find_targets(model, config.target_modules, (torch.nn.Linear,))
    layers = {}
    for name in names:  # build every layer first: a bad factorisation leaves the model untouched
        try:
            layers[name] = TTLinear(
                model.get_submodule(name), config.rank, config.num_cores, config.factors_for(name), config.contraction
            )
        except HfAttnError as e:
            raise HfAttnError(f"{name}: {e}") from None
    undo = []
    for name, layer in layers.items():
        undo.append(_guarded(replace_module(model, name, layer), layer))
        if not config.keep_base:
            layer.drop_base()
    return undo


def _guarded(undo: Callable[[], None], layer: TTLinear) -> Callable[[], None]:
    def run() -> None:
        if not layer.keeps_base:
            raise HfAttnError(
                "This TT model was wrapped with keep_base=False, so the dense weights are gone: use "
                "hf_attn.unwrap(model, merge=True), or wrap with keep_base=True to be able to restore the base."
            )
        undo()

    return run


def merge(model: torch.nn.Module) -> None:
    """Fold every TTLinear into its base nn.Linear (dense weight = the TT-matrix of its cores)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, TTLinear):
            model.set_submodule(name, module.merged())


def tt_report(model: torch.nn.Module) -> dict[str, Any]:
    """Per wrapped module: shape, factors, ranks, dense vs TT parameters, relative reconstruction error; totals."""
    rows, dense_total, tt_total, dropped = [], 0, 0, 0
    for name, m in model.named_modules():
        if isinstance(m, TTLinear):
            rows.append(
                {
                    "module": name,
                    "shape": [m.out_features, m.in_features],
                    "out_factors": m.tt.out_factors,
                    "in_factors": m.tt.in_factors,
                    "ranks": m.tt.ranks,
                    "dense_params": m.dense_params,
                    "tt_params": m.tt_params,
                    "param_ratio": m.tt_params / m.dense_params,
                    "rel_error": m.reconstruction_error(),
                }
            )
            dense_total += m.dense_params
            tt_total += m.tt_params
            dropped += m.base_layer.weight.numel()
    if not rows:
        raise HfAttnError("tt_report needs a model wrapped with hf_attn.wrap(model, TTConfig(...)).")
    held = sum(p.numel() for p in model.parameters())  # includes cores and any dense weights still held
    model_before = held - tt_total - dropped + dense_total
    return {
        "modules": rows,
        "wrapped_dense_params": dense_total,
        "wrapped_tt_params": tt_total,
        "wrapped_param_ratio": tt_total / dense_total,
        "mean_rel_error": sum(r["rel_error"] for r in rows) / len(rows),
        "model_params_before": model_before,
        "model_params_after": model_before - dense_total + tt_total,
    }


SPEC = register_wrapper(WrapperSpec("tt", TTConfig, apply, merge))
