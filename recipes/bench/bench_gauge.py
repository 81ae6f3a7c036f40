"""Gauge attention speed and memory vs SDPA on the same q/k/v, standalone.

    python recipes/bench/bench_gauge.py --out runs/bench_gauge            # CUDA: T = 1k-64k, bf16, 16 x 64
    python recipes/bench/bench_gauge.py --tune 16384 --out runs/tune      # CUDA: the fused kernel's block sizes
    python recipes/bench/bench_gauge.py --smoke --out /tmp/bench_gauge    # CPU, tiny sizes: checks the script runs

For each T it times, forward and forward+backward (causal, no padding, batch 1):
- `sdpa`: F.scaled_dot_product_attention(q, k, v, is_causal=True), per SDPA backend (auto, flash, cudnn,
  efficient; 'n/a' where the backend refuses these inputs);
- `gauge`: hf_attn's gauge_attention_forward, parameter-free form, as it runs by default (on CUDA the fused
  Triton kernel, backend `default`);
- `gauge-sdpa`: the same on its SDPA path (augmented vectors + SDPA, `HF_ATTN_TRITON=0`), per backend;
- `gauge-compiled`: the SDPA path with `config.gauge_compile=True` (prologue fused by torch.compile; CUDA only);
- `gauge-explicit`: the explicit T x T KL path (output_attentions=True), forward only, T <= --explicit-max-t.
- `gauge-wW`: the SDPA path with `config.gauge_pad_width=W` (augmented vectors zero-padded to W, for W in --widths);
- `sdpa-wW`: plain SDPA on random q/k/v of head width W (the kernel's cost at that width without gauge's
  prologue: gauge minus this is the prologue).
Median of --repeats after --warmup runs (CUDA events), peak memory above the inputs, throughput ratio
gauge/sdpa (= sdpa ms / gauge ms, > 1 means gauge is faster). Prints a markdown table, writes bench_gauge.json.
`--tune T` first times each kernel of the fused path at T over `TUNE_CANDIDATES` (block sizes, warps, stages),
one kernel after another keeping the best (`--tune-kernels` names a subset), writes tune_gauge.json with the
settings to put in `hf_attn/attention/gauge/kernel.py::LAUNCH`, and runs the benchmark with them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from bench_kernels import triton_paths  # recipes/bench/ is on sys.path when this runs as a script
from hf_attn.attention.gauge import gauge_attention_forward
from hf_attn.utils import write_text_atomic

BACKENDS = ("auto", "flash", "cudnn", "efficient")
TUNE_CANDIDATES = {  # (query rows, keys, warps, stages) per program, per fused kernel
    "_fwd": [(64, 64, 4, 3), (64, 64, 4, 4), (64, 64, 4, 2), (64, 32, 4, 3), (64, 64, 8, 3), (128, 64, 8, 3),
             (128, 128, 8, 3), (128, 64, 4, 3), (64, 128, 4, 3)],
    "_bwd_dkv": [(32, 128, 4, 3), (32, 128, 4, 4), (64, 128, 8, 3), (64, 64, 4, 3), (64, 64, 4, 4), (32, 64, 4, 3),
                 (32, 128, 8, 3), (64, 128, 8, 2)],
    "_bwd_dq": [(64, 64, 4, 3), (64, 64, 4, 4), (64, 32, 4, 3), (128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 8, 3),
                (128, 64, 4, 3), (64, 128, 4, 3)],
}


def backend_ctx(name: str):
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kind = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}[name]
    return sdpa_kernel([kind])


def timed(fn, warmup: int, repeats: int, cuda: bool) -> tuple[float, float]:
    """(median ms, peak MiB above what was allocated before) of `fn()`."""
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else float("nan")
    return statistics.median(times), peak


def _module(**cfg):
    return SimpleNamespace(is_causal=True, layer_idx=0, training=False, config=SimpleNamespace(**cfg))


def cases(q, k, v, explicit: bool, compiled: bool, widths: list[int], leaves: list):
    """name -> forward callable on the same q/k/v (`sdpa-wW`: on new leaves of width W, added to `leaves`)."""
    module = _module()

    def on_sdpa(m=module):
        with triton_paths(False):
            return gauge_attention_forward(m, q, k, v, None)[0]

    out = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "gauge": lambda: gauge_attention_forward(module, q, k, v, None)[0],
        "gauge-sdpa": on_sdpa,
    }
    for w in widths:
        padded = _module(gauge_pad_width=w)
        out[f"gauge-w{w}"] = lambda m=padded: on_sdpa(m)
    for w in widths:
        qw, kw, vw = (torch.randn(*q.shape[:-1], w, device=q.device, dtype=q.dtype).requires_grad_() for _ in range(3))
        leaves += [qw, kw, vw]
        out[f"sdpa-w{w}"] = lambda qw=qw, kw=kw, vw=vw: F.scaled_dot_product_attention(qw, kw, vw, is_causal=True)
    if compiled:
        fused = _module(gauge_compile=True)
        out["gauge-compiled"] = lambda: on_sdpa(fused)
    if explicit:
        out["gauge-explicit"] = lambda: gauge_attention_forward(module, q, k, v, None, output_attentions=True)[0]
    return out


def run(t: int, args, device, dtype) -> list[dict]:
    g = torch.Generator(device=device).manual_seed(t)
    shape = (args.batch, args.heads, t, args.head_dim)
    q, k, v = (torch.randn(shape, generator=g, device=device, dtype=dtype).requires_grad_() for _ in range(3))
    grads = {}  # output shape -> upstream gradient, drawn once
    leaves = [q, k, v]
    cuda = device.type == "cuda"
    rows = []
    widths = [int(w) for w in args.widths.split(",") if w]
    for name, fwd in cases(q, k, v, t <= args.explicit_max_t, cuda and not args.no_compile, widths, leaves).items():
        backends = {"gauge-explicit": ("explicit",), "gauge": ("default",)}.get(name, BACKENDS if cuda else ("auto",))
        for backend in backends:
            row = {"T": t, "method": name, "backend": backend}
            for mode in ("fwd", "fwd+bwd"):
                if name == "gauge-explicit" and mode == "fwd+bwd" and t > args.explicit_bwd_max_t:
                    continue

                step = step_fn(fwd, mode, leaves, grads)
                try:
                    with backend_ctx(backend if backend in BACKENDS else "auto"):
                        ms, mib = timed(step, args.warmup, args.repeats, cuda)
                except RuntimeError as e:  # the backend refuses these inputs
                    row[mode] = None
                    row[f"{mode}_error"] = str(e).splitlines()[0][:160]
                    continue
                row[mode], row[f"{mode}_peak_mib"] = ms, mib
            rows.append(row)
            if cuda:
                torch.cuda.empty_cache()
    best_sdpa = {m: min((r[m] for r in rows if r["method"] == "sdpa" and r.get(m)), default=None)
                 for m in ("fwd", "fwd+bwd")}
    for r in rows:
        for m in ("fwd", "fwd+bwd"):
            if r.get(m) and best_sdpa[m]:
                r[f"{m}_throughput_vs_best_sdpa"] = best_sdpa[m] / r[m]
    return rows


def step_fn(fwd, mode: str, leaves: list, grads: dict):
    """One timed call: the forward under no_grad (`fwd`), or forward + backward (`fwd+bwd`)."""

    def step():
        if mode == "fwd":
            with torch.no_grad():
                return fwd()
        o = fwd()
        o.backward(grads.setdefault(o.shape, torch.randn_like(o)))
        for x in leaves:
            x.grad = None

    return step


def tune(t: int, args, device, dtype, timer=None) -> dict:
    """Each fused kernel's launch settings at length `t`, chosen in turn from `TUNE_CANDIDATES` (the forward by
    forward time, the backward kernels by forward + backward time), the rest kept at their best so far."""
    from hf_attn.attention.gauge import kernel as gk

    shape = (args.batch, args.heads, t, args.head_dim)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype).requires_grad_() for _ in range(3))
    fwd = lambda: gauge_attention_forward(_module(), q, k, v, None)[0]  # noqa: E731
    key = gk.launch_key(args.head_dim, dtype)
    trials, grads = [], {}
    timer = timer or (lambda step: timed(step, args.warmup, args.repeats, device.type == "cuda")[0])
    for kernel in args.tune_kernels or TUNE_CANDIDATES:
        candidates = TUNE_CANDIDATES[kernel]
        mode = "fwd" if kernel == "_fwd" else "fwd+bwd"
        best = None
        for cand in candidates:
            gk.LAUNCH[key][kernel] = cand
            try:
                ms = timer(step_fn(fwd, mode, [q, k, v], grads))
            except Exception as e:  # e.g. a block that needs more shared memory than the GPU has
                error = (str(e) or type(e).__name__).splitlines()[0][:160]
                trials.append({"kernel": kernel, "launch": cand, "error": error})
                continue
            trials.append({"kernel": kernel, "launch": cand, mode: ms})
            if best is None or ms < best[1]:
                best = (cand, ms)
        gk.LAUNCH[key][kernel] = best[0]
        print(f"{kernel}: best {best[0]} at {best[1]:.3f} ms ({mode})")
    return {"T": t, "key": list(key), "best": {n: list(c) for n, c in gk.LAUNCH[key].items()}, "trials": trials}


def table(rows: list[dict]) -> str:
    head = "| T | method | backend | fwd ms | fwd+bwd ms | fwd x best sdpa | fwd+bwd x best sdpa | peak MiB fwd / fwd+bwd |"
    lines = [head, "|" + "---|" * 8]
    fmt = lambda x, f="{:.3f}": "n/a" if x is None else f.format(x)  # noqa: E731
    for r in rows:
        lines.append(
            f"| {r['T']} | {r['method']} | {r['backend']} | {fmt(r.get('fwd'))} | {fmt(r.get('fwd+bwd'))} | "
            f"{fmt(r.get('fwd_throughput_vs_best_sdpa'), '{:.2f}')} | "
            f"{fmt(r.get('fwd+bwd_throughput_vs_best_sdpa'), '{:.2f}')} | "
            f"{fmt(r.get('fwd_peak_mib'), '{:.0f}')} / {fmt(r.get('fwd+bwd_peak_mib'), '{:.0f}')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--explicit-max-t", type=int, default=4096, help="largest T for the explicit path (forward)")
    p.add_argument("--explicit-bwd-max-t", type=int, default=1024, help="largest T for explicit fwd+bwd")
    p.add_argument("--widths", default="", help="padded widths for gauge-wW and sdpa-wW rows ('' for none)")
    p.add_argument("--no-compile", action="store_true", help="skip gauge-compiled (config.gauge_compile=True)")
    p.add_argument("--tune", type=int, metavar="T", help="tune the fused kernel's launch settings at length T (CUDA)")
    p.add_argument("--tune-kernels", nargs="+", choices=list(TUNE_CANDIDATES), help="tune only these kernels")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, float32: checks the script runs")
    p.add_argument("--out", default="runs/bench_gauge")
    args = p.parse_args(argv)
    if args.smoke:
        args.T, args.heads, args.head_dim, args.dtype = [128, 256], 2, 32, "float32"
        args.warmup, args.repeats, args.explicit_max_t, args.explicit_bwd_max_t = 1, 2, 256, 128
        device = torch.device("cpu")
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("bench_gauge needs a CUDA GPU (or --smoke for a CPU check).")
        device = torch.device("cuda")
    dtype = getattr(torch, args.dtype)
    if args.tune:  # the benchmark below then runs with the tuned settings
        tuned = tune(args.tune, args, device, dtype)
        write_text_atomic(Path(args.out) / "tune_gauge.json", json.dumps(tuned, indent=2))
    rows = [r for t in args.T for r in run(t, args, device, dtype)]
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "dtype": args.dtype, "batch": args.batch, "heads": args.heads, "head_dim": args.head_dim}
    print(json.dumps(info))
    print(table(rows))
    write_text_atomic(Path(args.out) / "bench_gauge.json", json.dumps({"info": info, "rows": rows}, indent=2))
    return {"info": info, "rows": rows}


if __name__ == "__main__":
    main()
