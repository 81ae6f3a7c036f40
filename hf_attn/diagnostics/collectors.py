"""The diagnostics hook the trainer calls at intervals, open to every variant and wrapper.

`collect(model, input_ids)` runs ONE forward with `output_attentions=True` (sdpa/flash/flex switch to `eager`
for it, which is the same math) and hands a `DiagnosticsContext` to:
1. every function registered with `register_collector(name, fn)`; `fn(ctx) -> dict` of JSON-able values,
   stored under `name`, or `{}` when it does not apply to this model (gauge registers row_std/KL_std,
   prismatic its routing metrics, the modulators their health), and
2. every submodule with a `hf_attn_diagnostics()` method (wrapper layers report their own state, e.g. a
   router's expert weights), stored under the module's name.
The built-in `head_entropy` collector gives `(layers, heads)` entanglement and attention entropies, the
numbers head pruning ranks by.

A collector may also register `summarize(rows, out_dir) -> dict`: at the end of a run the trainer hands it the
collector's values of every diagnostics pass (`[{"step": s, **values}, ...]`, oldest first) and stores what it
returns under its name in `diagnostics_summary.json`; it may draw figures into `out_dir` (the run folder), so
a wrapper's verdicts and plots (router collapse, CV health) come out of every run without a script of its own.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..utils import set_attn_implementation
from .entropy import head_entropies

# Implementations that cannot return attention maps; diagnostics run them as `eager` (identical math).
NO_MAPS = ("sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass
class DiagnosticsContext:
    """What a collector sees: the model, its inputs, the attention maps of one forward and the variant name."""

    model: torch.nn.Module
    input_ids: torch.Tensor
    attentions: tuple[torch.Tensor | None, ...]
    attention: str


Collector = Callable[[DiagnosticsContext], dict[str, Any]]
Summarizer = Callable[[list[dict[str, Any]], Path], dict[str, Any]]
collectors: dict[str, Collector] = {}
summarizers: dict[str, Summarizer] = {}


def register_collector(name: str, fn: Collector, summarize: Summarizer | None = None) -> Collector:
    """Add `fn` to the collectors every diagnostics pass calls (re-registering a name replaces it), with its
    optional end-of-run `summarize(rows, out_dir)`."""
    collectors[name] = fn
    summarizers.pop(name, None)
    if summarize is not None:
        summarizers[name] = summarize
    return fn


def summarize(rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """`{name: summary}` of every collector with a summarizer that reported in `rows` (diagnostics.jsonl)."""
    out = {}
    for name, fn in summarizers.items():
        mine = [{"step": r["step"], **r[name]} for r in rows if isinstance(r.get(name), dict)]
        if mine:
            out[name] = fn(mine, Path(out_dir))
    return out


def head_entropy(ctx: DiagnosticsContext) -> dict[str, Any]:
    """Per-head entanglement (singular-spectrum) and attention (row) entropy, nats, `(layers, heads)` lists."""
    if not ctx.attentions or any(a is None for a in ctx.attentions):
        why = "a window hybrid has no single map" if getattr(ctx.model.config, "hf_attn_window", 0) else "none returned"
        return {"unavailable": f"attention '{ctx.attention}': no attention maps ({why})"}
    return {
        "entanglement": head_entropies(ctx.attentions, "entanglement").tolist(),
        "attention": head_entropies(ctx.attentions, "attention").tolist(),
    }


register_collector("head_entropy", head_entropy)


@contextlib.contextmanager
def maps_available(model: torch.nn.Module):
    """Temporarily run sdpa/flash models as eager so the forward returns attention maps."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    swap = impl in NO_MAPS
    if swap:
        set_attn_implementation(model, "eager")
    try:
        yield impl
    finally:
        if swap:
            set_attn_implementation(model, impl)


@torch.no_grad()
def collect(model: torch.nn.Module, input_ids: torch.Tensor, forward: Callable | None = None) -> dict[str, Any]:
    """Run every collector and module hook on one forward of `input_ids`.

    `forward` (default `model`) is what runs the batch: the trainer passes its accelerate-prepared model
    (DDP/FSDP) while `model` is the unwrapped one whose config is switched.
    """
    was_training = model.training
    model.eval()
    try:
        # a window hybrid has no single attention map (softmax rows plus a variant's state): no maps asked for,
        # and the map collectors say so instead of failing the run
        maps = not getattr(model.config, "hf_attn_window", 0)
        with maps_available(model) as impl:
            out = (forward or model)(input_ids=input_ids, output_attentions=maps)
        ctx = DiagnosticsContext(model, input_ids, tuple(out.attentions or ()) if maps else (), impl)
        result = {name: out for name, fn in collectors.items() if (out := fn(ctx))}  # {} = not applicable
        for name, module in model.named_modules():
            hook = getattr(module, "hf_attn_diagnostics", None)
            if callable(hook):
                result[name or "model"] = hook()
    finally:
        model.train(was_training)
    return result
