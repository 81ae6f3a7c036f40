"""Geometric field modulator : geometry constrains the residual delta, it adds none.

Each KSimplexChannel expert (k = 1, 2, 4: edge, triangle, pentachoron) deforms a frozen regular k-simplex by
a learned map of the token's active hidden dims, reads its Cayley-Menger features (pairwise squared edge
lengths + squared volume), and turns them into a sigmoid gate over the active dims. The gates multiply:

    gate = prod_e ((1 - a_{l,e}) + a_{l,e} * sigmoid(W_e cm_e(h)))      a clamped to [alpha_min, alpha_max]
    h[active] <- h[active] * gate,   h[null] untouched

so with every alpha 0 (or every expert gate 1) a block sees exactly the base residual.
"""
from __future__ import annotations

import torch

from hf_attn.geometry import cayley_menger_features, regular_simplex
from .common import ModulatorModule, logit
from .config import FieldModulatorConfig


class KSimplexChannel(torch.nn.Module):
    """One expert: active dims -> deformed k-simplex -> LayerNorm'd Cayley-Menger features and vol^2."""

    def __init__(self, k: int, in_dim: int, edim: int, deform_scale: float):
        super().__init__()
        self.k, self.edim, self.deform_scale = k, edim, deform_scale
        self.register_buffer("template", regular_simplex(k, edim), persistent=False)
        self.to_deform = torch.nn.Linear(in_dim, (k + 1) * edim)
        self.out_dim = (k + 1) * k // 2 + 1
        self.norm = torch.nn.LayerNorm(self.out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(features, squared volume)` of the k-simplex deformed by `x`: normalised Cayley-Menger features."""
        verts = self.template + self.deform_scale * self.to_deform(x).unflatten(-1, (self.k + 1, self.edim))
        d2, vol2 = cayley_menger_features(verts)
        return self.norm(torch.cat([d2, vol2.unsqueeze(-1)], -1)), vol2


class GeometricFieldModulator(ModulatorModule):
    """Multiplicative gates on the residual stream from k-simplex experts: geometry shapes the delta, adds none."""

    def __init__(self, config: FieldModulatorConfig, d_model: int, layer_names: list[str]):
        super().__init__(layer_names, config.track_cv, config.cv_samples)
        self.config = config
        n_null = int(d_model * config.null_space_fraction)
        if config.null_space_position == "tail":
            active = torch.arange(d_model - n_null)
        else:
            perm = torch.randperm(d_model, generator=torch.Generator().manual_seed(config.null_space_seed))
            active = perm[n_null:].sort().values
        self.register_buffer("active_idx", active, persistent=False)
        n_active = active.numel()
        self.experts = torch.nn.ModuleDict(
            {f"k{k}": KSimplexChannel(k, n_active, config.expert_edim, config.deform_scale) for k in config.expert_ks}
        )
        self.gates = torch.nn.ModuleDict(
            {name: torch.nn.Linear(e.out_dim, n_active) for name, e in self.experts.items()}
        )
        rows = len(layer_names) if config.per_layer_per_expert else 1
        self.alpha_logit = torch.nn.Parameter(torch.full((rows, len(config.expert_ks)), logit(config.initial_alpha)))
        self.register_buffer("validity", torch.ones(len(layer_names), len(config.expert_ks)))

    def alphas(self) -> torch.Tensor:
        """Gate strengths `(layers, experts)`, sigmoid of the logits clamped to `[alpha_min, alpha_max]`."""
        a = torch.sigmoid(self.alpha_logit).clamp(self.config.alpha_min, self.config.alpha_max)
        return a.expand(len(self.layer_names), -1)

    def forward(self, hidden: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """Gate the active dimensions of block `layer_idx`'s hidden states; null-space dimensions pass as they are."""
        active = hidden.float().index_select(-1, self.active_idx)
        alphas = self.alphas()[layer_idx]
        gate = torch.ones_like(active)
        for e, (name, expert) in enumerate(self.experts.items()):
            feats, vol2 = expert(active)
            gate = gate * ((1 - alphas[e]) + alphas[e] * torch.sigmoid(self.gates[name](feats)))
            if self.config.track_validity and self.training:
                with torch.no_grad():
                    self.validity[layer_idx, e].mul_(0.99).add_(0.01 * (vol2 > 0).float().mean())
        out = hidden.index_copy(-1, self.active_idx, (active * gate).to(hidden.dtype))
        self.record(layer_idx, out)
        return out

    def param_groups(self, lr: float) -> list[dict]:
        """The design's optimiser groups: experts at lr * gradient_scale, alphas at lr / 2, gates at lr.

        Adam-type optimisers ignore a constant gradient factor, so the design's gradient scaling of the
        geometric parameters is applied as this learning-rate factor.
        """
        return [
            {"params": list(self.experts.parameters()), "lr": lr * self.config.gradient_scale},
            {"params": [self.alpha_logit], "lr": lr * 0.5},
            {"params": list(self.gates.parameters()), "lr": lr},
        ]

    @torch.no_grad()
    def health_metrics(self) -> dict[str, float]:
        """Alphas and simplex validity per block and expert, mean validity and the template volume per expert."""
        out = {}
        alphas = self.alphas()
        for i, name in enumerate(self.layer_names):
            for e, k in enumerate(self.config.expert_ks):
                out[f"alpha/{name}/k{k}"] = float(alphas[i, e])
                if self.config.track_validity:
                    out[f"validity/{name}/k{k}"] = float(self.validity[i, e])
        for e, k in enumerate(self.config.expert_ks):
            if self.config.track_validity:
                out[f"validity/k{k}"] = float(self.validity[:, e].mean())
            _, vol2 = cayley_menger_features(self.experts[f"k{k}"].template.double())
            out[f"template_vol2/k{k}"] = float(vol2)
        return out
