"""Frozen-weight geometry: SVD effective rank, sparsity (Q sparsity), dead MLP
neurons, cross-layer correlation, norm scales, T5 position-bias crystallisation and the QK manifold.

Each function takes catalog entries (`hf_attn.probes.catalog`) and returns plain JSON-able dicts.
"""
from __future__ import annotations

import torch

from hf_attn.geometry import singular_value_stats

from .catalog import WeightEntry, by_group

SPARSITY_THRESHOLDS = (1e-4, 1e-3, 1e-2, 1e-1)
MATRIX_ROLES = ("q", "k", "v", "o", "gate", "up", "down")


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float32)


def singular_values(w: torch.Tensor) -> torch.Tensor:
    """Singular values from the eigenvalues of the smaller float64 Gram matrix (several times faster than
    an SVD on CPU; float64 keeps the small ones accurate enough for rank statistics)."""
    w = w.detach().to("cpu", torch.float64)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return torch.linalg.eigvalsh(gram).flip(0).clamp_min(0).sqrt()


def svd_probe(entry: WeightEntry) -> dict:
    """Effective-rank numbers of one weight matrix."""
    return {"name": entry.name, "group": entry.group, "layer": entry.layer, "shape": list(entry.param.shape),
            **singular_value_stats(singular_values(entry.param))}


def sparsity_probe(entries: list[WeightEntry]) -> dict[str, dict[str, float]]:
    """Fraction of |w| below each threshold, per group (`<0.1` on q is the "Q sparsity")."""
    out = {}
    edges = torch.tensor(SPARSITY_THRESHOLDS)
    for group, items in by_group(entries, MATRIX_ROLES).items():
        counts = torch.zeros(len(edges) + 1, dtype=torch.long)
        for e in items:  # one pass per matrix, no concatenated copy of the whole model
            counts += torch.bincount(torch.bucketize(_f32(e.param).abs().flatten(), edges, right=True), minlength=len(edges) + 1)
        below = counts.cumsum(0)[:-1].double() / counts.sum()
        out[group] = {f"<{t:g}": float(b) for t, b in zip(SPARSITY_THRESHOLDS, below)}
    return out


def dead_neuron_probe(entries: list[WeightEntry]) -> list[dict]:
    """Per MLP block: neuron importance = |up row| * |down column| (* |gate row|); dead < 1% of the mean,
    weak < 10%."""
    out = []
    mlp = {}
    for e in entries:
        if e.role in ("gate", "up", "down"):
            mlp.setdefault((e.location, e.layer), {})[e.role] = e
    for (location, layer), parts in sorted(mlp.items()):
        if "up" not in parts or "down" not in parts:
            continue
        score = _f32(parts["up"].param).norm(dim=1) * _f32(parts["down"].param).norm(dim=0)
        if "gate" in parts:
            score = score * _f32(parts["gate"].param).norm(dim=1)
        mean = score.mean()
        out.append({"location": location, "layer": layer, "d_ff": score.numel(),
                    "dead_frac": float((score < 0.01 * mean).double().mean()),
                    "weak_frac": float((score < 0.10 * mean).double().mean())})
    return out


def cross_layer_probe(entries: list[WeightEntry], roles=("q", "k", "v", "o")) -> dict[str, dict]:
    """Cosine between the flattened weights of the same role in different layers (matrix + adjacent mean)."""
    out = {}
    for group, items in by_group(entries, roles).items():
        items = [e for e in items if e.param.shape == items[0].param.shape and e.layer >= 0]
        if len(items) < 2:
            continue
        flat = torch.nn.functional.normalize(torch.stack([_f32(e.param).flatten() for e in items]), dim=-1)
        cos = flat @ flat.T
        adjacent = cos.diagonal(1)
        off = cos[~torch.eye(len(items), dtype=torch.bool)]
        out[group] = {"layers": [e.layer for e in items], "matrix": cos.tolist(),
                      "adjacent_mean": float(adjacent.mean()), "offdiag_abs_mean": float(off.abs().mean())}
    return out


def norm_probe(entries: list[WeightEntry]) -> list[dict]:
    """LayerNorm / RMSNorm scales: mean, std, dims > 1.5 (amplified), < 0.5 (suppressed), near 1."""
    out = []
    for e in entries:
        if e.role == "norm" and e.param.dim() == 1 and e.name.endswith("weight"):
            w = _f32(e.param)
            out.append({"name": e.name, "layer": e.layer, "location": e.location, "mean": float(w.mean()),
                        "std": float(w.std()), "high": int((w > 1.5).sum()), "low": int((w < 0.5).sum()),
                        "near_one": int(((w > 0.8) & (w < 1.2)).sum()), "dim": w.numel()})
    return out


def position_bias_probe(entries: list[WeightEntry]) -> list[dict]:
    """T5 relative position bias `(buckets, heads)`: heads peaking at the first 3 buckets are local, at the
    last 3 global, elsewhere mixed ("crystallised" decoder heads: 0 mixed)."""
    out = []
    for e in entries:
        if e.role != "position_bias":
            continue
        rpb = _f32(e.param)
        nb, nh = rpb.shape
        peak = rpb.argmax(0)
        local, glob = int((peak <= 2).sum()), int((peak >= nb - 3).sum())
        out.append({"name": e.name, "location": e.location, "buckets": nb, "heads": nh, "local": local,
                    "global": glob, "mixed": nh - local - glob, "peak_bucket": peak.tolist(), "bias": rpb.T.tolist()})
    return out


def qk_manifold_probe(q: WeightEntry, k: WeightEntry, n_kv_heads: int | None) -> dict:
    """The bilinear similarity x^T M y with M = sum_h W_q[h]^T W_k[kv(h)] (d_model x d_model, RoPE ignored):
    stable rank, asymmetry ||M - M^T|| / ||M||, the fraction of positive / negative eigenvalues of its
    symmetric part over d_model, and `positive_balance` = positive / nonzero eigenvalues (grouped-query k
    heads cap the rank of M, so zero eigenvalues are common; T5-XXL cross-attention is reported at 0.500)."""
    wq, wk = _f32(q.param), _f32(k.param)
    if wk.shape[0] != wq.shape[0]:  # grouped-query attention: repeat each kv head for its query heads
        if not n_kv_heads or wk.shape[0] % n_kv_heads:
            return {"layer": q.layer, "group": q.group, "skipped": "unknown kv head count"}
        hd = wk.shape[0] // n_kv_heads
        wk = wk.view(n_kv_heads, hd, -1).repeat_interleave(wq.shape[0] // wk.shape[0], 0).reshape(wq.shape[0], -1)
    m = wq.T.double() @ wk.double()
    sym = (m + m.T) / 2
    eig = torch.linalg.eigvalsh(sym)
    tol = eig.abs().max() * 1e-9
    s = singular_values(m)
    pos, neg = int((eig > tol).sum()), int((eig < -tol).sum())
    return {"layer": q.layer, "group": q.group, "dim": m.shape[0],
            "stable_rank": float((s**2).sum() / s[0] ** 2), "asymmetry": float((m - m.T).norm() / m.norm()),
            "positive_frac": pos / m.shape[0], "negative_frac": neg / m.shape[0],
            "positive_balance": pos / max(pos + neg, 1),
            "top_eigenvalues": eig.flip(0)[:3].tolist()}
