"""Prismatic v2 layer: route, soft-merge the expert views of the current base weights, run the module once.

`PrismaticBase` holds what every Prismatic wrapper shares (router, view cache, routing stats, the routing
context); `PrismaticLayer` applies it to any module (a Linear, an MLP) through `torch.func.functional_call`.
"""
from __future__ import annotations

import torch
from torch.func import functional_call, vmap

from ..base import WrapperLayer
from .config import PrismaticConfig
from .metrics import RoutingStats
from .perturb import ViewCache, merge, view
from .router import Router, RoutingContext


def call_with(module: torch.nn.Module, params: dict[str, torch.Tensor], batched: bool, x: torch.Tensor):
    """`module(x)` with `params` swapped in; `batched` params carry a leading batch dim matching x's."""
    if not batched:
        return functional_call(module, params, (x,))
    return vmap(lambda p, xb: functional_call(module, p, (xb,)), randomness="different")(params, x)


def first_linear(module: torch.nn.Module) -> torch.nn.Linear:
    """The first `nn.Linear` inside `module`; its input width sizes the router."""
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            return m
    raise TypeError(f"{type(module).__name__} has no nn.Linear to size the router from.")


class PrismaticBase(WrapperLayer):
    """Router + expert views of `base_layer`'s parameters; subclasses decide how the module runs."""

    def __init__(self, base: torch.nn.Module, config: PrismaticConfig, context: RoutingContext, role: str):
        super().__init__()
        self.base_layer = base
        self.config = config
        self.context = context
        self.role = role  # 'decoder' (causal), 'encoder', or 'cross' (input is the encoder's output)
        pooling = config.router_pooling
        if pooling == "auto":
            pooling = "first" if role == "decoder" else "mean"
        linear = first_linear(base)
        self.router = Router(linear.in_features, config, pooling).to(linear.weight.device)  # base may be on GPU
        self.views = ViewCache(config)
        self.stats = RoutingStats(config.collapse_threshold, config.collapse_steps)
        self._prefill_routing: torch.Tensor | None = None

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, K)` routing for input `(B, T, H)`; decoder modules reuse the prefill routing under a cache."""
        ctx = self.context
        stored = self._prefill_routing
        if (self.role == "decoder" and ctx.past_len > 0 and self.router.forced is None and stored is not None
                and stored.shape[0] == x.shape[0]):
            routing = stored
        else:
            routing = self.router(x, ctx.mask_for(self.role, x.shape[1]))
            if self.role == "decoder":
                self._prefill_routing = routing.detach()
        self.stats.record(routing, self.training)
        return routing

    def merged_params(self, routing: torch.Tensor) -> tuple[dict[str, torch.Tensor], bool]:
        """SMEAR-merged parameters of `base_layer` and whether they are per sequence (batched)."""
        params = dict(self.base_layer.named_parameters())
        if self.config.perturbation_scale == 0:
            return params, False  # every view equals the base
        forced = self.router.forced
        if forced is not None:
            return {n: view(w, self.views.get(n, w), forced, self.config) for n, w in params.items()}, False
        shared = routing.shape[0] == 1
        r = routing[0] if shared else routing
        return {n: merge(w, self.views.get(n, w), r, self.config) for n, w in params.items()}, not shared


class PrismaticLayer(PrismaticBase):
    """v2 on any module taking one hidden-state tensor `(B, T, H)` (attention projections, MLPs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Route the sequence, merge the expert views' parameters and run the base module with them."""
        routing = self.route(x)
        params, batched = self.merged_params(routing)
        return call_with(self.base_layer, params, batched, x)

