"""Inject Prismatic layers into a model (the `apply` of the wrapper spec) and the helpers around them."""
from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Callable

import torch

from hf_attn.diagnostics.collectors import DiagnosticsContext, register_collector
from hf_attn.diagnostics.plots import pyplot, save_figure
from hf_attn.utils import HfAttnError

from ..base import find_targets, replace_module
from .config import PrismaticConfig
from .layer import PrismaticBase, PrismaticLayer
from .metrics import collect, mask_drift, selections
from .rope_alibi import ATTENTION_CLASSES, PrismaticAttention
from .router import RoutingContext

DEFAULT_TARGETS = {"v2": ["mlp", "DenseReluDense"], "v3": ["self_attn"]}


def role_of(model: torch.nn.Module, name: str) -> str:
    """'encoder' / 'cross' (input = encoder output) / 'decoder' (causal): decides pooling and cache reuse."""
    if not model.config.is_encoder_decoder:
        return "decoder"
    if name.startswith("encoder."):
        return "encoder"
    if ".EncDecAttention." in name and name.rsplit(".", 1)[-1] in ("k", "v"):
        return "cross"
    return "decoder"


def _layer_for(model, name: str, module: torch.nn.Module, config: PrismaticConfig, ctx: RoutingContext):
    role = role_of(model, name)
    if isinstance(module, ATTENTION_CLASSES):
        return PrismaticAttention(module, config, ctx, role).train(module.training)
    if config.version == "v3":
        raise HfAttnError(
            f"Prismatic v3 (RoPE vs ALiBi) wraps decoder attention blocks ({', '.join(c.__name__ for c in ATTENTION_CLASSES)}); "
            f"{name} is a {type(module).__name__}. Use target_modules=['self_attn'] on a Llama/Qwen2/Qwen3/Mistral model."
        )
    if type(module).__name__.endswith("Attention"):
        raise HfAttnError(
            f"Prismatic v2 cannot wrap the whole {type(module).__name__} ({name}); supported blocks: "
            f"{', '.join(c.__name__ for c in ATTENTION_CLASSES)}. Wrap its projections instead, e.g. "
            "target_modules=['q', 'k', 'v', 'o'] for T5."
        )
    return PrismaticLayer(module, config, ctx, role).train(module.training)


def apply(model: torch.nn.Module, config: PrismaticConfig) -> list[Callable[[], None]]:
    """Replace each targeted module with its Prismatic layer; returns the undo callbacks."""
    targets = config.target_modules or DEFAULT_TARGETS[config.version]
    names = find_targets(model, targets)
    nested = [(a, b) for a in names for b in names if b.startswith(a + ".")]
    if nested:
        raise HfAttnError(f"target_modules selects {nested[0][1]} inside {nested[0][0]}; pick one of the two levels.")
    ctx = RoutingContext(encoder_decoder=bool(model.config.is_encoder_decoder))
    undo = [replace_module(model, n, _layer_for(model, n, model.get_submodule(n), config, ctx)) for n in names]
    handle = model.register_forward_pre_hook(ctx.capture, with_kwargs=True)
    undo.append(handle.remove)
    return undo


def prismatic_layers(model: torch.nn.Module) -> dict[str, PrismaticBase]:
    """Every Prismatic layer of `model`, by module name; refuses a model without any."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, PrismaticBase)}
    if not layers:
        raise HfAttnError("This model has no Prismatic layers: wrap it with hf_attn.wrap(model, PrismaticConfig()).")
    return layers


def routing_metrics(model: torch.nn.Module) -> dict[str, float]:
    """Routing metrics of the last forward of every Prismatic layer (see metrics.py); warns on collapse."""
    return collect(prismatic_layers(model))


def force_expert(model: torch.nn.Module, expert: int | None) -> torch.nn.Module:
    """Route every sequence to `expert` (one-hot) in every Prismatic layer; `None` gives the router back."""
    for layer in prismatic_layers(model).values():
        if expert is not None and not 0 <= expert < layer.router.num_experts:
            raise HfAttnError(f"expert must be in [0, {layer.router.num_experts - 1}] or None, got {expert}.")
        layer.router.forced = expert
    return model


# The selection each model had at its first diagnostics pass (before training, in the trainer): mask drift's reference.
_FIRST_SELECTION: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _training_collector(ctx: DiagnosticsContext) -> dict[str, float]:
    """For the trainer's diagnostics pass: routing metrics of any Prismatic layers (collapse warning included)
    and, for perturbed views, `mask_drift/{mean,max,tensors}` since the first pass."""
    layers = {n: m for n, m in ctx.model.named_modules() if isinstance(m, PrismaticBase)}
    if not layers:
        return {}
    out = collect(layers)
    now = selections(layers)
    if now:
        first = _FIRST_SELECTION.setdefault(ctx.model, now)
        out.update({f"mask_drift/{k}": v for k, v in mask_drift(first, now).items()})
    return out


def _summary(rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """End of run: the collapse verdict, the routing at the first and last pass, mask drift, and a routing plot."""
    first, last = rows[0], rows[-1]
    experts = sorted(k for k in last if k.startswith("routing/expert_"))
    plt = pyplot()
    fig, (a, b) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    steps = [r["step"] for r in rows]
    for i, key in enumerate(experts):
        a.plot(steps, [r.get(key) for r in rows], label=f"expert {i}")
    a.set(ylabel="mean routing weight", ylim=(0, 1))
    a.legend()
    for key, label in (("concentration", "concentration (max weight)"), ("balance", "balance (entropy / ln K)")):
        b.plot(steps, [r.get(f"routing/{key}") for r in rows], label=label)
    b.set(xlabel="step", ylim=(0, 1.05))
    b.legend()
    fig.suptitle("Prismatic routing per diagnostics pass (mean over wrapped modules)")
    return {
        "collapsed": last.get("routing/collapsed_modules", 0.0) > 0,
        "max_concentration_seen": max(r.get("routing/concentration", 0.0) for r in rows),
        "routing_first": {k: v for k, v in first.items() if k.startswith("routing/")},
        "routing_last": {k: v for k, v in last.items() if k.startswith("routing/")},
        "steps": [first["step"], last["step"]],
        "mask_drift": {k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("mask_drift/")},
        "figure": save_figure(fig, out_dir / "prismatic_routing.png"),
    }


register_collector("prismatic", _training_collector, _summary)
