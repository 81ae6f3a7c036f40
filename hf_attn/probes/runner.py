"""`run_probes`: every probe of docs/probes.md on a loaded model, JSON + a page of plots."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hf_attn.utils import HfAttnError, write_text_atomic

from . import weights as W
from .catalog import by_group, catalog
from .embedding import embedding_probe


@dataclass
class ProbeOptions:
    """Sampling sizes: the defaults finish on SmolLM2-135M on 2 CPU cores in about a minute."""

    embedding_rows: int = field(default=20000, metadata={"help": "Embedding rows used for the covariance spectrum."})
    simplices: int = field(default=1000, metadata={"help": "Random pentachora for the embedding CV."})
    max_layers: int | None = field(default=None, metadata={"help": "Evenly spaced blocks per stack for SVD/QK (None: all)."})
    seed: int = field(default=0, metadata={"help": "Seed of every sample."})

    def __post_init__(self) -> None:
        if self.embedding_rows < 10 or self.simplices < 2:
            raise HfAttnError("embedding_rows must be >= 10 and simplices >= 2.")
        if self.max_layers is not None and self.max_layers < 1:
            raise HfAttnError("max_layers must be >= 1 (or None for every layer).")


def _sampled_layers(entries, max_layers: int | None) -> set[tuple[str, int]]:
    """`(location, layer)` pairs kept for the per-matrix probes."""
    per_loc: dict[str, list[int]] = {}
    for e in entries:
        if e.layer >= 0:
            per_loc.setdefault(e.location, [])
            if e.layer not in per_loc[e.location]:
                per_loc[e.location].append(e.layer)
    keep = set()
    for loc, layers in per_loc.items():
        layers.sort()
        if max_layers and len(layers) > max_layers:
            step = (len(layers) - 1) / (max_layers - 1) if max_layers > 1 else 0
            layers = sorted({layers[round(i * step)] for i in range(max_layers)})
        keep |= {(loc, layer) for layer in layers}
    return keep


def _n_kv_heads(model) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads", None)


def _clean(obj):
    """NaN/inf -> None so the JSON is strict."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


@torch.no_grad()
def run_probes(model: torch.nn.Module, out_dir: str | Path | None = None, options: ProbeOptions | None = None,
               progress: bool = True) -> dict:
    """Run every probe; with `out_dir`, write `probes.json` and `probes.png` there (atomically)."""
    opts = options or ProbeOptions()
    entries = catalog(model)
    keep = _sampled_layers(entries, opts.max_layers)
    matrices = [e for e in entries if e.role in W.MATRIX_ROLES and (e.location, e.layer) in keep]
    qk_pairs = []
    for group, qs in by_group(entries, ("q",)).items():
        ks = {e.layer: e for e in by_group(entries, ("k",)).get(group[:-1] + "k", [])}
        qk_pairs += [(q, ks[q.layer]) for q in qs if q.layer in ks and (q.location, q.layer) in keep]
    emb = [e for e in entries if e.role == "embedding"]

    steps = ["embedding", "sparsity", "dead_neurons", "cross_layer", "norms", "position_bias"]
    bar = tqdm(total=len(steps) + len(matrices) + len(qk_pairs), desc="probes", disable=not progress)
    result: dict = {"model": type(model).__name__, "options": asdict(opts),
                    "n_params": sum(e.param.numel() for e in entries), "layers_probed": sorted(map(list, keep))}
    timings = result["timings"] = {}
    tick = time.perf_counter()

    def done(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - tick
        tick = now
        bar.update()

    result["embedding"] = embedding_probe(emb[0].param, opts.embedding_rows, opts.simplices, seed=opts.seed) if emb else None
    done("embedding")
    for name, fn in [("sparsity", W.sparsity_probe), ("dead_neurons", W.dead_neuron_probe),
                     ("cross_layer", W.cross_layer_probe), ("norms", W.norm_probe),
                     ("position_bias", W.position_bias_probe)]:
        bar.set_postfix_str(name)
        result[name] = fn(entries)
        done(name)
    result["svd"] = []
    for e in matrices:
        bar.set_postfix_str(f"svd {e.name}")
        result["svd"].append(W.svd_probe(e))
        done("svd")
    kv = _n_kv_heads(model)
    result["qk_manifold"] = []
    for q, k in qk_pairs:
        bar.set_postfix_str(f"qk {q.name}")
        result["qk_manifold"].append(W.qk_manifold_probe(q, k, kv))
        done("qk_manifold")
    bar.close()
    result["summary"] = summarise(result)
    result = _clean(result)
    if out_dir is not None:
        out = Path(out_dir)
        write_text_atomic(out / "probes.json", json.dumps(result, indent=1))
        from .plots import plot_probes

        plot_probes(result, out / "probes.png")
    return result


def summarise(result: dict) -> dict:
    """The headline numbers, one flat dict (what `hf-attn probe` prints)."""
    s: dict = {}
    emb = result.get("embedding")
    if emb:
        s["embedding_pr_over_dim"] = emb["pr_over_dim"]
        s["embedding_dims_95"] = emb["dims_for_variance"]["95%"]
        s["pentachoron_cv"] = emb["pentachoron"]["cv"]
        s["pentachoron_cv_random"] = emb["pentachoron"]["cv_random"]
    for group, frac in result["sparsity"].items():
        if group.endswith("/q") or group.endswith("/cross_q"):
            s[f"q_sparsity<0.1/{group}"] = frac["<0.1"]
    for group, c in result["cross_layer"].items():
        s[f"cross_layer_adjacent_cos/{group}"] = c["adjacent_mean"]
    if result["dead_neurons"]:
        s["dead_neuron_frac_mean"] = sum(d["dead_frac"] for d in result["dead_neurons"]) / len(result["dead_neurons"])
    for pb in result["position_bias"]:
        s[f"position_bias_mixed_heads/{pb['location']}"] = pb["mixed"]
    qk = [r for r in result["qk_manifold"] if "positive_frac" in r]
    for group in sorted({r["group"] for r in qk}):
        rows = [r["positive_balance"] for r in qk if r["group"] == group]
        s[f"qk_positive_balance/{group}"] = sum(rows) / len(rows)
    return s
