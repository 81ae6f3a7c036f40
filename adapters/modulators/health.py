"""Health metrics of a modulated model as one flat dict: alphas, validity, pentachoron CV and
participation ratio of the states the modulated blocks saw in the last forward, with warnings when the CV
leaves the configured band."""
from __future__ import annotations

import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from hf_attn.diagnostics.collectors import DiagnosticsContext, register_collector
from hf_attn.diagnostics.plots import pyplot, save_figure

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


def _training_collector(ctx: DiagnosticsContext) -> dict[str, Any]:
    """For the trainer's diagnostics pass: alpha, validity, CV and PR of a modulated model (CV-band warning),
    and the config's `cv_band` the summary draws."""
    if not any(isinstance(m, ModulatorModule) for m in ctx.model.modules()):
        return {}
    return {**modulator_health(ctx.model), "cv_band": list(find_modulator(ctx.model).config.cv_band)}


def alpha_per_block(row: dict[str, Any]) -> dict[str, float]:
    """`{block: alpha}` of one health row; the field modulator's per-expert alphas are averaged."""
    per_block = defaultdict(list)
    for key, value in row.items():
        if key.startswith("alpha/"):
            per_block[key.split("/")[1]].append(value)
    return {block: sum(v) / len(v) for block, v in per_block.items()}


def _summary(rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """End of run: alphas and CV/PR health at the first and last pass, and the alpha / CV plot."""
    first, last = rows[0], rows[-1]
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = [r["step"] for r in rows]
    blocks = list(alpha_per_block(first))
    cmap = plt.get_cmap("viridis")
    for i, block in enumerate(blocks):
        a.plot(steps, [alpha_per_block(r)[block] for r in rows], color=cmap(i / max(len(blocks) - 1, 1)), lw=1)
    a.set(title="alpha per block (dark = first; field: mean over experts)", xlabel="step")
    for key, label in (("cv/states", "modulated hidden states"), ("cv/geometry", "geometric embedding")):
        if key in first:
            b.plot(steps, [r.get(key) for r in rows], "o-", label=label)
    b.axhspan(*last["cv_band"], color="green", alpha=0.2, label="cv_band")
    b.set(title="pentachoron CV", xlabel="step")
    b.legend()
    keys = ["alpha_mean", "cv/states", "pr/states", "cv/geometry", "pr/geometry", "cv_in_band"]
    return {
        "first": {k: first[k] for k in keys if k in first},
        "last": {k: last[k] for k in keys + [k for k in last if k.startswith("validity/k")] if k in last},
        "alpha_last": alpha_per_block(last),
        "steps": [first["step"], last["step"]],
        "figure": save_figure(fig, out_dir / "modulator_alpha_cv.png"),
    }


register_collector("modulator_health", _training_collector, _summary)
