"""Kernel-level benchmark: holo/performer (Triton and PyTorch paths) against sdpa (flash, cuDNN) and fla.

bf16, batch 1, 16 heads, head_dim 64, causal; forward and forward+backward time (median of CUDA-event
timings) and peak memory above the inputs, all in one process so the ratios are fair.

    python recipes/bench/bench_kernels.py --out results/kernels            # H100: ~3 min
    python recipes/bench/bench_kernels.py --graphs --out results/kernels   # + CUDA-graph replay timings
    python recipes/bench/bench_kernels.py --smoke --out /tmp/kernels       # CPU, tiny sizes, PyTorch paths only
    python recipes/bench/bench_kernels.py --methods performer fla_chunk_linear_attn sdpa_cudnn --out DIR  # some rows
    python recipes/bench/bench_kernels.py --replot docs/bench/kernels_h100.json --out /tmp/k   # table + plot again
Writes `kernels.json`, `kernels.md` (table) and `kernels.png` under --out. Event timings include the host's
launch cost (what a plain eager call costs); `--graphs` adds replays of captured CUDA graphs, the device's own
time, which is what separates a kernel's speed from launch overhead at short T.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import hf_attn
from hf_attn.utils import write_text_atomic


def sdpa(backend):
    from torch.nn.attention import sdpa_kernel

    def run(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return run


@contextlib.contextmanager
def triton_paths(enabled: bool):
    """Within the block the attention functions take their Triton kernels where they would (`HF_ATTN_TRITON`
    automatic) or never (`HF_ATTN_TRITON=0`, the PyTorch/SDPA paths); the setting before is restored after."""
    old = os.environ.get("HF_ATTN_TRITON")
    os.environ["HF_ATTN_TRITON"] = "auto" if enabled else "0"
    try:
        yield
    finally:
        os.environ.pop("HF_ATTN_TRITON") if old is None else os.environ.__setitem__("HF_ATTN_TRITON", old)


def variant(name: str, triton: bool, **config):
    fn = hf_attn.get_variant(name).function
    module = SimpleNamespace(is_causal=True, layer_idx=0, training=False, config=SimpleNamespace(**config))

    def run(q, k, v):
        with triton_paths(triton):
            return fn(module, q, k, v, None)[0]

    return run


def fla_linear():
    try:
        from fla.ops.linear_attn import chunk_linear_attn
    except Exception:  # optional peer
        return None
    return lambda q, k, v: chunk_linear_attn(*(x.transpose(1, 2).contiguous() for x in (q, k, v)), normalize=True)[0]


def methods(device: str) -> dict:
    out = {"holo": variant("holo", True), "performer": variant("performer", True),
           # 64 features: performer's state then has fla's size per head (64 x 64), not the default 256 x 64
           "performer_m64": variant("performer", True, performer_num_features=64), "gauge": variant("gauge", True),
           "holo_torch": variant("holo", False), "performer_torch": variant("performer", False)}
    if device == "cuda":
        from torch.nn.attention import SDPBackend

        out["sdpa_flash"] = sdpa(SDPBackend.FLASH_ATTENTION)
        out["sdpa_cudnn"] = sdpa(SDPBackend.CUDNN_ATTENTION)
        fla = fla_linear()
        if fla is not None:
            out["fla_chunk_linear_attn"] = fla
    else:
        out["sdpa"] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        del out["holo"], out["performer"], out["performer_m64"], out["gauge"]  # on CPU: PyTorch paths, timed as *_torch
    return out


def timed(fn, device: str, budget_s: float = 1.0, max_reps: int = 20) -> float:
    """Median milliseconds of `fn` after warm-up (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(2):
        fn()
    times, spent = [], 0.0
    while len(times) < max_reps and (spent < budget_s or len(times) < 3):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            fn()
            ms = (time.perf_counter() - t0) * 1e3
        times.append(ms)
        spent += ms / 1e3
    return statistics.median(times)


def graph_timed(fn, reps: int = 20) -> float:
    """Median milliseconds of replaying a CUDA graph of `fn`: the device's own time, without the host's
    per-launch cost (the device machine's CPU needs ~0.1 ms per op, which event timings of short calls include)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    del graph
    return statistics.median(times)


def measure(name: str, fn, t: int, heads: int, dim: int, device: str, dtype, graphs: bool = False) -> dict:
    q, k, v = (torch.randn(1, heads, t, dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, heads, t, dim, device=device, dtype=dtype)
    row = {"name": name, "T": t}
    try:
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if device == "cuda" else 0
        with torch.no_grad():
            row["fwd_ms"] = timed(lambda: fn(q, k, v), device)
        fwd_peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else None

        def fwd_bwd():
            out = fn(q, k, v)
            out = out if out.shape == grad.shape else out.transpose(1, 2)
            torch.autograd.backward(out, grad)

        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        row["fwdbwd_ms"] = timed(fwd_bwd, device)
        if device == "cuda":
            row["fwd_peak_MiB"] = round(fwd_peak, 1)
            row["fwdbwd_peak_MiB"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
    except Exception as e:  # an OOM or a missing backend is a result, not a crash
        row["error"] = f"{type(e).__name__}: {str(e)[:160]}"
    finally:
        q.grad = k.grad = v.grad = None
    if graphs and "error" not in row:
        try:
            with torch.no_grad():
                row["fwd_graph_ms"] = graph_timed(lambda: fn(q, k, v))
            q.grad = k.grad = v.grad = None
            row["fwdbwd_graph_ms"] = graph_timed(fwd_bwd)
        except Exception as e:  # a path that cannot be captured (a host sync) is a result too
            row["graph_error"] = f"{type(e).__name__}: {str(e)[:160]}"
        q.grad = k.grad = v.grad = None
        torch.cuda.empty_cache()
    print(row, flush=True)
    return row


def table(rows: list[dict], lengths: list[int], timing: str = "") -> str:
    """Markdown table of `fwd{timing}_ms` / `fwdbwd{timing}_ms` (timing "" = events, "_graph" = graph replays)."""
    fwd, both = f"fwd{timing}_ms", f"fwdbwd{timing}_ms"
    names = [n for n in dict.fromkeys(r["name"] for r in rows)
             if not timing or any(both in r for r in rows if r["name"] == n)]
    by = {(r["name"], r["T"]): r for r in rows}
    best = {t: min((by.get((n, t), {}).get(both, float("inf")) for n in names if n.startswith("sdpa")),
                   default=None) for t in lengths}
    lines = ["| method | " + " | ".join(f"T={t} fwd / fwd+bwd ms (x sdpa best), peak MiB" for t in lengths) + " |",
             "|---" * (len(lengths) + 1) + "|"]
    for n in names:
        cells = []
        for t in lengths:
            r = by.get((n, t), {})
            if both not in r:
                cells.append(r.get("error", r.get("graph_error", "-"))[:40])
                continue
            ratio = f" (x{best[t] / r[both]:.2f})" if best[t] not in (None, float("inf")) else ""
            peak = f", {r['fwdbwd_peak_MiB']:.0f}" if "fwdbwd_peak_MiB" in r else ""
            cells.append(f"{r[fwd]:.3f} / {r[both]:.3f}{ratio}{peak}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], env: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("fwdbwd_ms", "forward+backward ms (CUDA events)")]
    if any("fwdbwd_graph_ms" in r for r in rows):
        panels.append(("fwdbwd_graph_ms", "forward+backward ms (CUDA-graph replay)"))
    panels.append(("fwdbwd_peak_MiB", "peak MiB"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4))
    for ax, (key, label) in zip(axes, panels):
        for n in dict.fromkeys(r["name"] for r in rows):
            pts = [(r["T"], r[key]) for r in rows if r["name"] == n and key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=n)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T (tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"causal attention, {env['dtype'].removeprefix('torch.')}, B=1, H={env['heads']}, "
                 f"D={env['head_dim']}, {env['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (checks the script, not the speed)")
    p.add_argument("--lengths", type=int, nargs="*", default=[1024, 4096, 16384, 65536])
    p.add_argument("--graphs", action="store_true", help="also time CUDA-graph replays (the device's own time)")
    p.add_argument("--methods", nargs="*", help="time only these rows (names as in the table; default: all)")
    p.add_argument("--replot", metavar="KERNELS_JSON", help="re-render kernels.md/png from a saved kernels.json; no timing")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        write_report(saved["rows"], saved["env"], out)
        return
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    lengths, heads, dim = ([128, 256], 2, 64) if args.smoke else (args.lengths, 16, 64)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    chosen = methods(device)
    unknown = set(args.methods or ()) - set(chosen)
    if unknown:
        p.error(f"unknown --methods {sorted(unknown)}; choose from {sorted(chosen)}")
    chosen = {n: fn for n, fn in chosen.items() if not args.methods or n in args.methods}
    rows = []
    for t in lengths:
        for name, fn in chosen.items():
            if name.endswith("_torch") and t > 16384:
                continue  # the PyTorch reference paths are shown up to 16k (their 64k run takes minutes)
            rows.append(measure(name, fn, t, heads, dim, device, dtype, args.graphs and device == "cuda"))
    env = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
           "dtype": str(dtype), "heads": heads, "head_dim": dim}
    write_text_atomic(out / "kernels.json", json.dumps({"env": env, "rows": rows}, indent=1))
    write_report(rows, env, out)


def write_report(rows: list[dict], env: dict, out: Path) -> None:
    """`kernels.md` (event table, plus the graph table when timed) and `kernels.png` under `out`."""
    lengths = list(dict.fromkeys(r["T"] for r in rows))
    md = table(rows, lengths)
    if any("fwdbwd_graph_ms" in r for r in rows):
        md += "\n\nCUDA-graph replays (no host launch cost):\n\n" + table(rows, lengths, "_graph")
    write_text_atomic(out / "kernels.md", md + "\n")
    plot(rows, env, out / "kernels.png")
    print(md)


if __name__ == "__main__":
    main()
