"""Perplexity and attention sharpness of parameter-free gauge attention on SmolLM2 across kappa, next to sdpa.

    python recipes/evidence/gauge_kappa_sweep.py --windows 2 --window-len 256 --out runs/gauge_kappa

Loads SmolLM2-135M once (from --model-path, else the cached hf_attn.assets copy), evaluates the Wikipedia
test split (hf_attn.assets.wiki_text, or --text-file) in non-overlapping windows with `sdpa`, then with
`gauge` for each kappa (config.gauge_kappa), recording mean row_std with hf_attn.attention.gauge.diagnostics during the
same forward. Writes kappa_sweep.csv, kappa_sweep.json and kappa_sweep.png (Agg) to --out.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

import hf_attn
from hf_attn.attention.gauge import diagnostics as gauge_diag
from hf_attn.evaluate import token_loss
from hf_attn.utils import atomic_path, write_text_atomic

DEFAULT_KAPPAS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def perplexity(model, windows: torch.Tensor, diag_rows: int | None = None) -> tuple[float, float]:
    """(perplexity, mean row_std over layers/heads/windows or nan) of `windows (N, L)`."""
    nll, count, row_std = 0.0, 0, []
    for w in tqdm(windows, desc="windows", leave=False):
        x = w[None].to(model.device)
        with torch.no_grad():
            if diag_rows:
                with gauge_diag.collect(model, rows=diag_rows, warn=False) as store:
                    loss = token_loss(model, x)
                row_std.append(store.mean_row_std())
            else:
                loss = token_loss(model, x)
        nll += loss[0].item()
        count += int(loss[1].item())
    return math.exp(nll / count), (sum(row_std) / len(row_std) if row_std else float("nan"))


def plot(rows: list[dict], sdpa_ppl: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = [r["kappa"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(k, [r["perplexity"] for r in rows], "o-", label="gauge (parameter-free)")
    a.axhline(sdpa_ppl, color="k", ls="--", label=f"sdpa ({sdpa_ppl:.2f})")
    a.set(xscale="log", yscale="log", xlabel="kappa", ylabel="perplexity", title="SmolLM2-135M, Wikipedia test")
    a.legend()
    b.plot(k, [r["mean_row_std"] for r in rows], "o-")
    b.axhline(0.10, color="g", ls=":", label="sharp > 0.10")
    b.axhline(0.05, color="r", ls=":", label="uniform < 0.05")
    b.set(xscale="log", xlabel="kappa", ylabel="mean row_std", title="attention sharpness")
    b.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", help="from_pretrained folder of SmolLM2 (default: hf_attn.assets cache)")
    p.add_argument("--text-file", help="plain text to evaluate (default: Wikipedia summaries, test split)")
    p.add_argument("--windows", type=int, default=2)
    p.add_argument("--window-len", type=int, default=256)
    p.add_argument("--kappas", type=float, nargs="+", default=list(DEFAULT_KAPPAS))
    p.add_argument("--diag-rows", type=int, default=32, help="query rows sampled per call for row_std")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/gauge_kappa")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_attn import assets

    path = args.model_path or assets.smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32)
    model = model.to(args.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    text = Path(args.text_file).read_text() if args.text_file else assets.wiki_text("test")
    windows = assets.token_windows(tokenizer, text, args.windows, args.window_len)
    head_dim = model.config.head_dim if getattr(model.config, "head_dim", None) else (
        model.config.hidden_size // model.config.num_attention_heads)

    start = time.time()
    sdpa_ppl, _ = perplexity(model, windows)
    hf_attn.set_attention(model, "gauge")
    rows = []
    for kappa in tqdm(args.kappas, desc="kappa"):
        model.config.gauge_kappa = kappa
        ppl, row_std = perplexity(model, windows, args.diag_rows)
        rows.append({"kappa": kappa, "perplexity": ppl, "mean_row_std": row_std})
        print(f"kappa {kappa:g}: perplexity {ppl:.3f}, mean row_std {row_std:.4f}", flush=True)
    result = {
        "model": str(path), "tokens": f"{args.windows} x {args.window_len}", "head_dim": head_dim,
        "default_kappa": math.sqrt(head_dim), "sdpa_perplexity": sdpa_ppl, "sweep": rows,
        "seconds": round(time.time() - start, 1),
        "command": "python recipes/evidence/gauge_kappa_sweep.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if v is not None and k not in ("device", "model_path")),
    }
    out = Path(args.out)
    with atomic_path(out / "kappa_sweep.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["kappa", "perplexity", "mean_row_std"])
            w.writeheader()
            w.writerows(rows)
    write_text_atomic(out / "kappa_sweep.json", json.dumps(result, indent=2))
    plot(rows, sdpa_ppl, out / "kappa_sweep.png")
    print(f"sdpa perplexity {sdpa_ppl:.3f}; wrote {out}/kappa_sweep.{{csv,json,png}}")
    return result


if __name__ == "__main__":
    main()
