"""Routing metrics per wrapped module, kept from each forward (detached, no recomputation, no GPU sync).

Each forward stores the `(B, K)` routing; the numbers are derived only when read:
- `expert_k_weight`: mean routing weight of expert k over the sequences of the last forward,
- `entropy`: Shannon entropy (nats) of that mean distribution (max ln K),
- `balance`: entropy / ln K (1.0 = perfectly even, 0 = one expert),
- `concentration`: the largest expert weight,
- `variance`: variance of the K expert weights (population; 0 = even).
Collapse: a device-side counter of consecutive training forwards whose concentration exceeded
`collapse_threshold`; reading the metrics warns once it reaches `collapse_steps`.

Mask drift (v2, perturbation_scale > 0): the share of the elements selected for perturbation at a reference
point that are no longer selected now, mean and max over the wrapped weights. It tells whether reusing a
selection between re-rankings (`mask_refresh_steps > 1`) changes anything at a given learning rate.
"""
from __future__ import annotations

import math
import warnings

import torch

from .perturb import sign_mask


class RoutingStats:
    """The last routing weights of one layer and a count of consecutive collapsed training forwards."""

    def __init__(self, threshold: float, steps: int):
        self.threshold = threshold
        self.steps = steps
        self.routing: torch.Tensor | None = None
        self.run: torch.Tensor | None = None  # consecutive collapsed training forwards (device scalar)
        self.warned = False

    def record(self, routing: torch.Tensor, training: bool) -> None:
        """Keep this forward's routing; in training, count consecutive forwards where one expert holds > threshold."""
        routing = routing.detach()
        self.routing = routing
        if training:
            collapsed = routing.mean(0).amax() > self.threshold
            run = self.run if self.run is not None else torch.zeros((), device=routing.device)
            self.run = (run + 1) * collapsed

    def summary(self) -> dict[str, float]:
        """Mean weight per expert, entropy, balance and concentration of the last routing (empty before a forward)."""
        if self.routing is None:
            return {}
        p = self.routing.float().mean(0).cpu()
        k = p.numel()
        entropy = float(-(p * p.clamp_min(1e-12).log()).sum())
        out = {f"expert_{i}_weight": float(v) for i, v in enumerate(p)}
        out.update(entropy=entropy, balance=entropy / math.log(k), concentration=float(p.max()),
                   variance=float(p.var(unbiased=False)))
        out["collapse_run"] = float(self.run) if self.run is not None else 0.0
        return out


def collect(layers: dict[str, "object"]) -> dict[str, float]:
    """Flat dict for loggers: `<module>/<metric>` per wrapped module plus `routing/<metric>` means."""
    out: dict[str, float] = {}
    per_metric: dict[str, list[float]] = {}
    collapsed = 0
    for name, layer in layers.items():
        stats: RoutingStats = layer.stats
        summary = stats.summary()
        for key, value in summary.items():
            out[f"{name}/{key}"] = value
            per_metric.setdefault(key, []).append(value)
        if summary and summary["collapse_run"] >= stats.steps:
            collapsed += 1
            if not stats.warned:
                top = max(range(layer.router.num_experts), key=lambda i: summary[f"expert_{i}_weight"])
                warnings.warn(
                    f"Prismatic router of {name} collapsed: expert {top} held > {stats.threshold:.0%} of the routing "
                    f"for {int(summary['collapse_run'])} consecutive training steps. Try a larger perturbation_scale, "
                    "a higher router_temperature, or router_init='uniform'.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            stats.warned = True
        else:
            stats.warned = False
    for key, values in per_metric.items():
        out[f"routing/{key}"] = sum(values) / len(values)
    if per_metric:
        out["routing/collapsed_modules"] = float(collapsed)
    return out


@torch.no_grad()
def selections(layers: dict[str, "object"]) -> dict[str, torch.Tensor]:
    """The perturbation selection (int8 signs of expert 1's band) of every weight the layers perturb."""
    return {f"{name}.{pname}": sign_mask(p, layer.config, pname, 1).to(torch.int8)
            for name, layer in layers.items() if layer.config.perturbation_scale
            for pname, p in layer.base_layer.named_parameters() if p.dim() > 1}


def mask_drift(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """Share of each tensor's selected elements (in `before`) that `after` changed or dropped: mean, max, count."""
    shares = [((before[n] != after[n]) & (before[n] != 0)).sum().item() / max(1, (before[n] != 0).sum().item())
              for n in before]
    return {"mean": sum(shares) / len(shares), "max": max(shares), "tensors": float(len(shares))} if shares else {}
