"""Health metrics of a modulated model as one flat dict: alphas, validity, pentachoron CV and
participation ratio of the states the modulated blocks saw in the last forward, with warnings when the CV
leaves the configured band."""
from __future__ import annotations

import math
import warnings

import torch

from hf_attn.diagnostics.collectors import DiagnosticsContext, register_collector

from hf_attn.geometry import participation_ratio, pentachoron_cv
from .common import ModulatorModule

MODULE_NAME = "hf_attn_modulator"


class GeometryHealthWarning(UserWarning):
    """The pentachoron CV left the band the config names (filter it with `warnings.simplefilter`)."""


def find_modulator(model: torch.nn.Module) -> ModulatorModule:
    """The geometric modulator inside `model` (or `model` itself); refuses a model without one."""
    from hf_attn.utils import HfAttnError

    if isinstance(model, ModulatorModule):
        return model
    for module in model.modules():
        if isinstance(module, ModulatorModule):
            return module
    raise HfAttnError(
        "No geometric modulator in this model: wrap it first, e.g. "
        "hf_attn.wrap(model, hf_attn.ResidualModulatorConfig())."
    )


def modulator_health(model: torch.nn.Module, warn: bool = True) -> dict[str, float]:
    """Flat dict: `alpha/<block>[/k<k>]`, `alpha_mean`, `validity/...` (field), geometry CV/PR (residual),
    `cv/<block>`, `pr/<block>` of the last forward's modulated states, `cv/states`, `pr/states`,
    `cv_in_band` (1.0/0.0). Warns (`GeometryHealthWarning`) when a CV is outside `config.cv_band`."""
    mod = find_modulator(model)
    cfg = mod.config
    out = mod.health_metrics()
    out["alpha_mean"] = float(mod.alphas().detach().mean())
    cvs, prs = [], []
    for idx, states in sorted(mod.recorded.items()):
        name = mod.layer_names[idx]
        cv = pentachoron_cv(states, cfg.cv_simplices)["cv"]
        pr = participation_ratio(states)
        out[f"cv/{name}"], out[f"pr/{name}"] = cv, pr
        cvs.append(cv)
        prs.append(pr)
    if cvs:
        out["cv/states"] = sum(cvs) / len(cvs)
        out["pr/states"] = sum(prs) / len(prs)
    checked = {k: v for k, v in out.items() if k.startswith("cv/") and k != "cv/states" and not math.isnan(v)}
    low, high = cfg.cv_band
    outside = {k: v for k, v in checked.items() if not low <= v <= high}
    out["cv_in_band"] = float(not outside) if checked else float("nan")
    if warn and outside:
        worst = max(outside.items(), key=lambda kv: abs(kv[1] - (low + high) / 2))
        warnings.warn(
            f"Pentachoron CV outside the band [{low}, {high}] in {len(outside)} of {len(checked)} measurements "
            f"(furthest: {worst[0]} = {worst[1]:.3f}).",
            GeometryHealthWarning,
            stacklevel=2,
        )
    return out


def _training_collector(ctx: DiagnosticsContext) -> dict[str, float]:
    """For the trainer's diagnostics pass: alpha, validity, CV and PR of a modulated model (CV-band warning)."""
    if not any(isinstance(m, ModulatorModule) for m in ctx.model.modules()):
        return {}
    return modulator_health(ctx.model)


register_collector("modulator_health", _training_collector)
