"""One page (3 x 3) of plots from a `run_probes` result."""
from __future__ import annotations

from pathlib import Path

from hf_attn.utils import atomic_path


def plot_probes(result: dict, path: str | Path) -> Path:
    """One page of plots from a `run_probes` result, written to `path` (returned)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(3, 3, figsize=(18, 14))
    fig.suptitle(f"Weight geometry of {result['model']} ({result['n_params']:,} params)")
    emb = result.get("embedding")
    a = ax[0, 0]
    if emb:
        lam = [v for v in emb["eigenvalues"] if v and v > 0]
        a.semilogy(lam)
        a.axvline(emb["participation_ratio"], color="r", ls="--", label=f"PR = {emb['participation_ratio']:.1f}")
        for frac, n in emb["dims_for_variance"].items():
            a.axvline(n, color="gray", ls=":", alpha=0.6)
        a.legend()
    a.set_title("Embedding covariance spectrum (dotted: 80/90/95/99% variance)")
    a = ax[0, 1]
    if emb:
        p = emb["pentachoron"]
        a.bar(["embedding", "random"], [p["cv"] or 0, p["cv_random"] or 0], color=["purple", "gray"])
        a.axhspan(*p["band"], color="green", alpha=0.2, label="0.20-0.23 band")
        a.legend()
    a.set_title("Pentachoron CV")
    _by_layer(ax[0, 2], result["svd"], "effective_rank", "Entropy effective rank by layer")
    _by_layer(ax[1, 0], result["svd"], "stable_rank", "Stable rank by layer")
    a = ax[1, 1]
    groups = list(result["sparsity"])
    a.barh(groups, [result["sparsity"][g]["<0.1"] for g in groups], color="teal")
    a.set_title("Sparsity: fraction |w| < 0.1")
    a = ax[1, 2]
    for loc in sorted({d["location"] for d in result["dead_neurons"]}):
        rows = [d for d in result["dead_neurons"] if d["location"] == loc]
        a.plot([d["layer"] for d in rows], [d["dead_frac"] for d in rows], "o-", label=f"{loc} dead (<1%)")
        a.plot([d["layer"] for d in rows], [d["weak_frac"] for d in rows], "s--", label=f"{loc} weak (<10%)")
    if result["dead_neurons"]:
        a.legend(fontsize=8)
    a.set_title("MLP dead / weak neurons")
    a = ax[2, 0]
    cross = result["cross_layer"]
    key = next((g for g in cross if g.endswith("/q")), next(iter(cross), None))
    if key:
        im = a.imshow(cross[key]["matrix"], cmap="RdBu_r", vmin=-0.2, vmax=0.2)
        fig.colorbar(im, ax=a)
    a.set_title(f"Cross-layer weight cosine ({key or 'n/a'})")
    a = ax[2, 1]
    for loc in sorted({n["location"] for n in result["norms"]}):
        rows = [n for n in result["norms"] if n["location"] == loc and n["layer"] >= 0]
        a.plot([n["layer"] for n in rows], [n["mean"] for n in rows], ".", label=loc)
    a.axhline(1.0, color="r", ls="--", alpha=0.5)
    if result["norms"]:
        a.legend()
    a.set_title("Norm scales (mean per norm weight)")
    a = ax[2, 2]
    if result["position_bias"]:
        pb = result["position_bias"][0]
        im = a.imshow(pb["bias"], aspect="auto", cmap="RdBu_r")
        fig.colorbar(im, ax=a)
        a.set_title(f"Position bias {pb['location']} (heads x buckets), mixed heads: {pb['mixed']}")
    else:
        qk = [r for r in result["qk_manifold"] if "positive_frac" in r]
        for g in sorted({r["group"] for r in qk}):
            rows = [r for r in qk if r["group"] == g]
            a.plot([r["layer"] for r in rows], [r["positive_balance"] for r in rows], "o-", label=g)
        a.axhline(0.5, color="gray", ls=":")
        if qk:
            a.legend()
        a.set_title("QK manifold: positive / nonzero eigenvalues")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def _by_layer(ax, rows: list[dict], key: str, title: str) -> None:
    for g in sorted({r["group"] for r in rows}):
        sel = [r for r in rows if r["group"] == g and r["layer"] >= 0]
        ax.plot([r["layer"] for r in sel], [r[key] for r in sel], ".-", label=g, alpha=0.8)
    if rows:
        ax.legend(fontsize=7, ncol=2)
    ax.set_title(title)
    ax.set_xlabel("layer")
