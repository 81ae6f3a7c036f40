"""TT rank sweep (`hf-attn tt-sweep`): perplexity vs parameter ratio of TT-compressed projections over a rank sweep.

For each rank: wrap the model with `TTConfig(rank=...)` (TT-SVD of the pretrained weights, no training),
measure perplexity on held-out token windows, record the per-module report, unwrap. Writes
`tt_sweep.csv`, `tt_sweep.png` (perplexity vs parameter ratio) and `tt_report.json` (per-module figures).
"""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..adapters import unwrap, wrap
from ..adapters.tt import TTConfig, tt_report
from ..evaluate import perplexity
from ..utils import atomic_path, write_text_atomic

CSV_FIELDS = [
    "rank",
    "num_cores",
    "wrapped_modules",
    "wrapped_dense_params",
    "wrapped_tt_params",
    "wrapped_param_ratio",
    "mean_rel_error",
    "max_rel_error",
    "model_params_before",
    "model_params_after",
    "perplexity",
    "dense_perplexity",
]


def run_sweep(
    model: torch.nn.Module,
    windows: torch.Tensor,
    ranks: Sequence[int],
    out_dir: str | Path,
    num_cores: int = 3,
    target_modules: list[str] | str | None = None,
    label: str = "model",
    progress: Callable = lambda it, **kw: it,
) -> list[dict[str, Any]]:
    """Sweep `ranks` on `model` (wrapped and unwrapped in place); write CSV, PNG and JSON into `out_dir`."""

    out_dir = Path(out_dir)
    dense_ppl = perplexity(model, windows)
    rows, reports = [], {}
    for rank in progress(list(ranks), desc="tt ranks"):
        t0 = time.perf_counter()
        wrap(model, TTConfig(rank=rank, num_cores=num_cores, target_modules=target_modules))
        try:
            report = tt_report(model)
            ppl = perplexity(model, windows)
        finally:
            unwrap(model)
        errors = [m["rel_error"] for m in report["modules"]]
        rows.append(
            {
                "rank": rank,
                "num_cores": num_cores,
                "wrapped_modules": len(report["modules"]),
                "wrapped_dense_params": report["wrapped_dense_params"],
                "wrapped_tt_params": report["wrapped_tt_params"],
                "wrapped_param_ratio": round(report["wrapped_param_ratio"], 6),
                "mean_rel_error": round(report["mean_rel_error"], 6),
                "max_rel_error": round(max(errors), 6),
                "model_params_before": report["model_params_before"],
                "model_params_after": report["model_params_after"],
                "perplexity": round(ppl, 4),
                "dense_perplexity": round(dense_ppl, 4),
            }
        )
        reports[str(rank)] = {**report, "perplexity": ppl, "seconds": time.perf_counter() - t0}

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out_dir / "tt_sweep.csv", buf.getvalue())
    meta = {"model": label, "windows": list(windows.shape), "dense_perplexity": dense_ppl, "num_cores": num_cores}
    write_text_atomic(out_dir / "tt_report.json", json.dumps({**meta, "ranks": reports}, indent=1))
    with atomic_path(out_dir / "tt_sweep.png") as tmp:
        _plot(rows, dense_ppl, label, tmp)
    return rows


def _plot(rows: list[dict[str, Any]], dense_ppl: float, label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["wrapped_param_ratio"] for r in rows]
    y = [r["perplexity"] for r in rows]
    ax.plot(x, y, "o-", label="TT-SVD, no training")
    for r in rows:
        ax.annotate(f"r={r['rank']}", (r["wrapped_param_ratio"], r["perplexity"]), textcoords="offset points", xytext=(4, 4))
    ax.axhline(dense_ppl, linestyle="--", color="gray", label=f"dense ({dense_ppl:.2f})")
    ax.set_xlabel("TT parameters / dense parameters (wrapped projections)")
    ax.set_ylabel("perplexity")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(f"{label}: perplexity vs parameter ratio")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
