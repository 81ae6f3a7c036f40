"""Kernel-level benchmark: each hf-attn variant against `sdpa` (flash and cuDNN backends) in one process.

bf16, batch 1, 16 heads, head_dim 64, causal; forward and forward+backward time (ms) and peak memory (MiB)
over T, with ratios to the best `sdpa` backend measured in the same run.

    python recipes/bench/bench_attention.py --out results/bench            # on a CUDA machine
    python recipes/bench/bench_attention.py --smoke                        # CPU, tiny sizes, checks the script runs
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import hf_attn


def timeit(fn, device, reps: int) -> float:
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps * 1e3


def sdpa_fn(backend):
    from torch.nn.attention import sdpa_kernel

    def f(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return f


def variant_fn(name):
    fn = hf_attn.get_variant(name).function
    module = SimpleNamespace(is_causal=True, layer_idx=0, training=False, config=SimpleNamespace())
    return lambda q, k, v: fn(module, q, k, v, None)[0]


def measure(name, fn, t, args, device):
    shape = (1, args.heads, t, args.head_dim)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    row = dict(name=name, T=t)
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with torch.no_grad():
            row["fwd_ms"] = timeit(lambda: fn(q, k, v), device, args.reps)
        if device.type == "cuda":
            row["fwd_peak_MiB"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            torch.cuda.reset_peak_memory_stats()

        def fb():
            fn(q, k, v).float().sum().backward()

        row["fwdbwd_ms"] = timeit(fb, device, max(2, args.reps // 2))
        if device.type == "cuda":
            row["fwdbwd_peak_MiB"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    except Exception as e:  # an OOM or unsupported backend is a result, not a crash
        row["error"] = f"{type(e).__name__}: {str(e)[:160]}"
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="1024,4096,16384,65536")
    p.add_argument("--variants", default=",".join(sorted(hf_attn.list_variants())))
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--out", default="results/bench")
    p.add_argument("--smoke", action="store_true", help="CPU, T=256/512, 2 heads: checks that the script runs")
    args = p.parse_args()
    if args.smoke:
        args.lengths, args.heads, args.reps = "256,512", 2, 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fns = {}
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend

        fns["sdpa_flash"] = sdpa_fn(SDPBackend.FLASH_ATTENTION)
        fns["sdpa_cudnn"] = sdpa_fn(SDPBackend.CUDNN_ATTENTION)
    else:
        fns["sdpa_math"] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for name in args.variants.split(","):
        fns[name] = variant_fn(name)
    rows = [measure(n, f, int(t), args, device) for t in args.lengths.split(",") for n, f in fns.items()]
    table = ratio_table(rows, [n for n in fns if not n.startswith("sdpa")])
    print("\n" + table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", torch=torch.__version__,
                heads=args.heads, head_dim=args.head_dim, batch=1, dtype="bf16" if device.type == "cuda" else "fp32")
    (out / "bench_attention.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / "bench_attention.md").write_text(f"{json.dumps(meta)}\n\n{table}\n")


def ratio_table(rows, variants) -> str:
    """Markdown: ms per T for every row, and each variant's speed-up over the best sdpa backend."""
    lengths = sorted({r["T"] for r in rows})
    names = list(dict.fromkeys(r["name"] for r in rows))
    get = {(r["name"], r["T"]): r for r in rows}
    lines = ["| impl | metric | " + " | ".join(f"T={t}" for t in lengths) + " |",
             "|---|---|" + "---|" * len(lengths)]
    for n in names:
        for metric in ("fwd_ms", "fwdbwd_ms", "fwdbwd_peak_MiB"):
            vals = [get.get((n, t), {}).get(metric) for t in lengths]
            if any(v is not None for v in vals):
                lines.append(f"| {n} | {metric} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in vals) + " |")
    for n in variants:
        for metric in ("fwd_ms", "fwdbwd_ms"):
            cells = []
            for t in lengths:
                best = min((r[metric] for r in rows if r["T"] == t and r["name"].startswith("sdpa") and metric in r),
                           default=None)
                mine = get.get((n, t), {}).get(metric)
                cells.append("-" if best is None or mine is None else f"{best / mine:.2f}x")
            lines.append(f"| {n} speed-up vs best sdpa | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
