"""Entropy-ranked head pruning (M5): does a head's logged entropy predict how much the model needs it?

Heads are ranked by the last per-head entropy a run logged (`diagnostics.jsonl`, collector `head_entropy`,
entanglement or attention entropy), the k lowest (or highest, or a seeded random order as the control) are
silenced, and the held-out set is re-evaluated. Silencing a head zeroes its slice of the input of the layer's
`self_attn.o_proj`, so it works for every attention variant and wrapper without touching their code.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import torch

from ..utils import HfAttnError, write_text_atomic

ORDERS = ("low", "high", "random")


def head_ranking(entropy: list[list[float]], order: str, seed: int = 0) -> list[tuple[int, int]]:
    """`(layer, head)` pairs in pruning order: lowest entropy first (`low`), highest first, or random."""
    heads = [(l, h) for l, row in enumerate(entropy) for h in range(len(row))]
    if order == "low":
        return sorted(heads, key=lambda lh: (entropy[lh[0]][lh[1]], lh))
    if order == "high":
        return sorted(heads, key=lambda lh: (-entropy[lh[0]][lh[1]], lh))
    if order == "random":
        perm = torch.randperm(len(heads), generator=torch.Generator().manual_seed(seed)).tolist()
        return [heads[i] for i in perm]
    raise HfAttnError(f"order must be one of {ORDERS}, got {order!r}.")


def output_projections(model) -> list[torch.nn.Module]:
    """Each decoder layer's `self_attn.o_proj` (or a wrapper standing in for it), by layer index."""
    found = {}
    for name, module in model.named_modules():
        m = re.search(r"layers\.(\d+)\.self_attn\.o_proj$", name)
        if m:
            found[int(m.group(1))] = module
    if not found:
        raise HfAttnError(f"{type(model).__name__} has no layers.N.self_attn.o_proj modules to prune heads at.")
    return [found[i] for i in sorted(found)]


class HeadMask:
    """Zero chosen heads' outputs before `o_proj`; `set(heads)` changes them, `remove()` detaches the hooks."""

    def __init__(self, model, num_heads: int):
        self.projections = output_projections(model)
        self.num_heads = num_heads
        self.pruned: dict[int, list[int]] = {}
        self.handles = [p.register_forward_pre_hook(self._hook(i)) for i, p in enumerate(self.projections)]

    def _hook(self, layer: int):
        def hook(module, args):
            heads = self.pruned.get(layer)
            if not heads:
                return None
            x = args[0]
            x = x.view(*x.shape[:-1], self.num_heads, x.shape[-1] // self.num_heads).clone()
            x[..., heads, :] = 0
            return (x.flatten(-2), *args[1:])

        return hook

    def set(self, heads: list[tuple[int, int]]) -> None:
        """Silence exactly `heads`, `(layer, head)` pairs; an empty list restores every head."""
        self.pruned = {}
        for layer, head in heads:
            self.pruned.setdefault(layer, []).append(head)

    def remove(self) -> None:
        """Remove the hooks; the model is as before."""
        for h in self.handles:
            h.remove()


def load_trained(run_dir: Path):
    """`(cfg, data, model)` rebuilt from a run folder with the weights of its latest checkpoint."""
    from safetensors.torch import load_file

    from ..train.checkpoint import latest_checkpoint
    from ..train.config import TrainConfig
    from ..train.data import build_data
    from ..train.models import build_model, load_tokenizer
    from ..train.rundir import read_run

    run = read_run(run_dir)
    cfg = TrainConfig.from_dict(run.config)
    folder = latest_checkpoint(run_dir)
    if folder is None or not (folder / "model.safetensors").is_file():
        raise HfAttnError(f"{run_dir} has no checkpoint with model.safetensors; train it to the end first.")
    data = build_data(cfg, load_tokenizer(cfg) if cfg.task == "token" else None)
    model = build_model(cfg, data.vocab_size)
    missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise HfAttnError(f"Checkpoint {folder} does not fit the model its config builds "
                          f"(missing {sorted(set(missing) - tied)[:4]}, unexpected {sorted(unexpected)[:4]}).")
    return run, cfg, data, model.eval()


def prune_run(run_dir: str | Path, counts: list[int] | None = None, orders: tuple[str, ...] = ORDERS,
              kind: str = "entanglement") -> list[dict[str, Any]]:
    """Evaluate the run's model with the k heads of each order silenced; writes pruning.csv and pruning.md."""
    from accelerate import Accelerator

    from ..train.loop import evaluate

    run_dir = Path(run_dir)
    run, cfg, data, model = load_trained(run_dir)
    entries = [d["head_entropy"] for d in run.diagnostics if kind in d.get("head_entropy", {})]
    if not entries:
        raise HfAttnError(f"{run_dir}/diagnostics.jsonl has no '{kind}' head entropies to rank heads by.")
    entropy = entries[-1][kind]
    total = sum(len(r) for r in entropy)
    counts = sorted(set(counts if counts is not None else [round(total * f) for f in (0, .125, .25, .375, .5, .625, .75)]))
    if any(not 0 <= k <= total for k in counts):
        raise HfAttnError(f"Head counts must be within [0, {total}] (the model has {total} heads).")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.train.mixed_precision)
    model = accelerator.prepare(model)
    mask = HeadMask(accelerator.unwrap_model(model), len(entropy[0]))
    rows = []
    try:
        for order in orders:
            ranking = head_ranking(entropy, order, cfg.seed)
            for k in counts:
                if k == 0 and order != orders[0]:
                    rows.append({**rows[0], "order": order})
                    continue
                mask.set(ranking[:k])
                m = evaluate(model, data, accelerator, cfg.task)
                rows.append({"order": order, "entropy": kind, "heads_pruned": k, "fraction": k / total,
                             "eval_loss": m["eval_loss"], "quality_metric": data.quality_metric,
                             "quality": m[data.quality_metric]})
    finally:
        mask.remove()
    write_text_atomic(run_dir / "pruning.csv", _csv(rows))
    write_text_atomic(run_dir / "pruning.md", pruning_markdown(rows, run.name, data.description))
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def pruning_markdown(rows: list[dict[str, Any]], name: str, data: str) -> str:
    """Quality vs heads pruned, one column per order."""
    orders = list(dict.fromkeys(r["order"] for r in rows))
    counts = list(dict.fromkeys(r["heads_pruned"] for r in rows))
    metric = rows[0]["quality_metric"]
    cell = {(r["order"], r["heads_pruned"]): r["quality"] for r in rows}
    lines = [f"Head pruning of `{name}` ({data}); {metric} after silencing k heads ranked by {rows[0]['entropy']} "
             "entropy (low = lowest first).", "", "| heads pruned | " + " | ".join(orders) + " |",
             "|---|" + "---|" * len(orders)]
    for k in counts:
        lines.append(f"| {k} | " + " | ".join(f"{cell[(o, k)]:.4f}" for o in orders) + " |")
    return "\n".join(lines) + "\n"
