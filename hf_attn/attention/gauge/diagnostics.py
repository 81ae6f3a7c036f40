"""Gauge attention health, recorded during the forward that runs anyway (docs/gauge.md).

Per layer (attention module) and head, from `rows` evenly spaced query rows of each call:
- `row_std`: std of a row's attention weights over the keys it may see, averaged over rows. Its
  labels: sharp > 0.10, uniform < 0.05, medium between. A one-hot row over n keys has std ~ 1/sqrt(n), so
  the labels assume rows of ~100+ keys; short rows read sharper.
- `mu_dist`: mean pairwise Euclidean distance between key means (the beliefs' `mu`) of sampled tokens.
- `phi_std`: std of the frames phi over tokens and components (0 in the parameter-free form).
- `kl_mean`, `kl_std`, `kl_min`, `kl_max`: the KL values over visible (query, key) pairs of the sampled rows.
A layer where more than half of the heads are uniform gets a warning (also listed in `summary()`).

Off by default (it costs a `rows x Tk x head_dim` KL per call); turn it on for a block of code:

    with hf_attn.attention.gauge.diagnostics.collect(model) as diag:
        model(**batch)
    diag.summary()   # {module name: {"row_std": [...], "labels": [...], ...}}
    diag.scalars()   # flat {"gauge/<module>/row_std": mean, ...} for a metrics logger
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch

from ...diagnostics.collectors import DiagnosticsContext, register_collector
from .attention import expand_beliefs, explicit_scores, row_bias, select_rows

SHARP, UNIFORM = 0.10, 0.05


def label(row_std: float) -> str:
    """`sharp`, `medium` or `uniform` for one head's mean row std."""
    return "sharp" if row_std > SHARP else "uniform" if row_std < UNIFORM else "medium"


class GaugeDiagnostics:
    """Store the gauge attention function writes into; the latest call per attention module is kept."""

    def __init__(self, rows: int = 32, warn: bool = True):
        self.rows, self.warn = rows, warn
        self.names: dict[int, str] = {}
        self.records: dict[str, dict] = {}
        self._warned: set[str] = set()

    @torch.no_grad()
    def record(self, module, call, mask4, qb, kb, settings) -> None:
        """Measure one attention call on sampled query rows and keep the layer's stats (warns once if most heads are
        uniform)."""
        name = self.names.get(id(module), f"layer{getattr(module, 'layer_idx', '?')}")
        tq, tk = qb.mu.shape[2], kb.mu.shape[2]
        rows = torch.linspace(0, tq - 1, min(tq, self.rows), device=qb.mu.device).round().long().unique()
        kb_full = expand_beliefs(kb, call.groups)
        scores = explicit_scores(select_rows(qb, rows), kb_full, settings) + row_bias(call, mask4, rows, tk)
        vis = torch.isfinite(scores)
        n = vis.sum(-1)
        live = n >= 2
        w = torch.softmax(scores.masked_fill(~vis, float("-inf")).nan_to_num(-1e30), -1) * vis
        row_var = ((w - 1.0 / n.clamp_min(1)[..., None]) ** 2 * vis).sum(-1) / n.clamp_min(1)
        row_std = (row_var.sqrt() * live).sum((0, 2)) / live.sum((0, 2)).clamp_min(1)
        kl = -scores * settings.kappa
        heads = kl.shape[1]
        kl_h = [kl[:, h][vis[:, h].expand_as(kl[:, h])] for h in range(heads)]
        stats = {
            "row_std": row_std.tolist(),
            "labels": [label(x) for x in row_std.tolist()],
            "kl_mean": [x.mean().item() if x.numel() else float("nan") for x in kl_h],
            "kl_std": [x.std().item() if x.numel() > 1 else float("nan") for x in kl_h],
            "kl_min": [x.min().item() if x.numel() else float("nan") for x in kl_h],
            "kl_max": [x.max().item() if x.numel() else float("nan") for x in kl_h],
            "mu_dist": _mu_dist(kb_full.mu, self.rows).tolist(),
            "phi_std": _phi_std(qb, kb_full, heads),
            "tokens": tq,
        }
        stats["uniform_fraction"] = stats["labels"].count("uniform") / heads
        self.records[name] = stats
        if stats["uniform_fraction"] > 0.5 and self.warn and name not in self._warned:
            self._warned.add(name)
            warnings.warn(f"gauge: {stats['labels'].count('uniform')}/{heads} heads of {name} are uniform "
                          f"(row_std < {UNIFORM}); lower kappa or use more l >= 2 blocks.", stacklevel=2)

    def summary(self) -> dict:
        """Per layer: the last recorded stats plus `warning` (more than half the heads uniform)."""
        out = {name: dict(r) for name, r in self.records.items()}
        for r in out.values():
            r["warning"] = r["uniform_fraction"] > 0.5
        return out

    def scalars(self, prefix: str = "gauge") -> dict[str, float]:
        """One number per module and statistic (mean over heads), for a metrics CSV."""
        flat = {}
        for name, r in self.records.items():
            for key in ("row_std", "mu_dist", "phi_std", "kl_mean", "kl_std"):
                vals = torch.tensor(r[key], dtype=torch.float64)
                flat[f"{prefix}/{name}/{key}"] = vals.nanmean().item()
            flat[f"{prefix}/{name}/uniform_fraction"] = r["uniform_fraction"]
        return flat

    def mean_row_std(self) -> float:
        """Mean row std over every recorded layer and head (NaN before any forward)."""
        vals = [x for r in self.records.values() for x in r["row_std"]]
        return sum(vals) / len(vals) if vals else float("nan")


def _mu_dist(mu: torch.Tensor, count: int) -> torch.Tensor:
    idx = torch.linspace(0, mu.shape[2] - 1, min(mu.shape[2], count), device=mu.device).round().long().unique()
    m = mu[:, :, idx].float()
    if m.shape[2] < 2:
        return torch.zeros(mu.shape[1])
    d = torch.cdist(m, m)
    k = m.shape[2]
    return (d.sum((-1, -2)) / (k * (k - 1))).mean(0).cpu()


def _phi_std(qb, kb, heads: int) -> list[float]:
    if qb.phi is None and kb.phi is None:
        return [0.0] * heads
    phis = [p.float() for p in (qb.phi, kb.phi) if p is not None]
    return [torch.cat([p[:, h].reshape(-1) for p in phis]).std().item() for h in range(heads)]


def attention_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Modules the attention function receives: transformers attention modules (never hf-attn wrappers)."""
    return {n: m for n, m in model.named_modules()
            if type(m).__name__.endswith("Attention") and hasattr(m, "config") and not hasattr(m, "base_layer")}


def enable(model: torch.nn.Module, rows: int = 32, warn: bool = True) -> GaugeDiagnostics:
    """Start recording on every attention module of `model` (for a training loop); see `disable`."""
    store = GaugeDiagnostics(rows, warn)
    for name, module in attention_modules(model).items():
        store.names[id(module)] = name.replace(".base_layer", "")
        module.gauge_diagnostics = store
    return store


def disable(model: torch.nn.Module) -> None:
    """Remove the diagnostics from every attention module of `model`; the forward stops measuring."""
    for module in attention_modules(model).values():
        if "gauge_diagnostics" in module.__dict__:
            del module.gauge_diagnostics


@contextlib.contextmanager
def collect(model: torch.nn.Module, rows: int = 32, warn: bool = True) -> Iterator[GaugeDiagnostics]:
    """Record gauge diagnostics for every forward inside the block; nothing is recorded after it."""
    store = enable(model, rows, warn)
    try:
        yield store
    finally:
        disable(model)


def _training_collector(ctx: DiagnosticsContext) -> dict[str, float]:
    """For the trainer's diagnostics pass: row_std / mu_dist / phi_std / KL_std of gauge models."""
    if ctx.attention != "gauge":
        return {}
    with collect(ctx.model) as store:
        ctx.model(input_ids=ctx.input_ids)
    return store.scalars()


register_collector("gauge", _training_collector)
