"""Time each performer kernel (`hf_attn/attention/performer/kernel.py`) over its launch settings, to choose `LAUNCH`.

    python recipes/bench/tune_performer.py --head-dim 128 --heads 16 --kv-heads 4 --out results/tune   # GPU: ~3 min
    python recipes/bench/tune_performer.py --smoke --out /tmp/tune    # tiny shapes (CPU: TRITON_INTERPRET=1)

For each chunk length it gives all five kernels each (feature block, warps, stages) setting in turn and times one
causal forward+backward kernel by kernel (median over `--steps`; each launch between two synchronisations, so a
kernel's time includes its launch). Per chunk length it keeps each kernel's fastest setting; the chunk length
whose kernels then sum least wins. It prints and writes (`tune_performer.json`) every trial with the kernels'
register spills where the GPU reports them, and the `LAUNCH` entry for these inputs. Feature blocks of 32 with
64-token chunks hit illegal memory accesses on an H200 (Triton 3.6), which end the CUDA context: the default
`--blocks` is 64.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from hf_attn.attention.performer import kernel as pk
from hf_attn.attention.performer.features import key_stabiliser_value, random_features
from hf_attn.utils import write_text_atomic


def kernel_times(step, steps: int, sync) -> tuple[dict[str, float], dict[str, int]]:
    """Median ms of each kernel launched by `step` (after one warm-up call, which compiles), and its spills."""
    times, spills = defaultdict(list), {}
    launch = pk.launch_fitting

    def timed_launch(name, *args):
        sync()
        t0 = time.perf_counter()
        compiled = launch(name, *args)
        sync()
        times[name].append((time.perf_counter() - t0) * 1e3)
        spills[name] = getattr(compiled, "n_spills", None)

    pk.launch_fitting = timed_launch
    try:
        step()
        times.clear()
        for _ in range(steps):
            step()
    finally:
        pk.launch_fitting = launch
    return {n: statistics.median(ts) for n, ts in times.items()}, spills


def tune(args, device: str, dtype: torch.dtype) -> dict:
    """Trials of every (chunk, setting), the fastest setting per kernel and chunk, and the winning `LAUNCH` entry."""
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, h, args.T, args.head_dim, generator=g, device=device).to(dtype).requires_grad_()
               for h in (args.heads, args.kv_heads, args.kv_heads))
    grad = torch.randn(1, args.T, args.heads, args.head_dim, generator=g, device=device).to(dtype)
    w = random_features(args.head_dim, args.features, 0, device)
    kstab = key_stabiliser_value(args.head_dim, args.features, 0)

    def step():
        o, _ = pk.performer_causal(q, k, v, w, args.head_dim**-0.25, key_stab=kstab)
        o.backward(grad)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    key = pk.launch_key(1 << (args.head_dim - 1).bit_length(), dtype)
    kept, trials, best = pk.LAUNCH[key], [], {}
    try:
        for chunk, setting in itertools.product(args.chunks, itertools.product(args.blocks, args.warps, args.stages)):
            pk.LAUNCH[key] = dict(C=chunk, **{n: setting for n in kept if n != "C"})
            ms, spills = kernel_times(step, args.steps, sync)
            trials.append({"C": chunk, "setting": list(setting), "ms": ms, "spills": spills})
            print(f"C={chunk} {setting}: " + ", ".join(f"{n} {t:.3f}" for n, t in ms.items()), flush=True)
            for n, t in ms.items():
                if t < best.setdefault(chunk, {}).get(n, (None, float("inf")))[1]:
                    best[chunk][n] = (list(setting), t)
    finally:
        pk.LAUNCH[key] = kept
    sums = {c: sum(t for _, t in b.values()) for c, b in best.items()}
    chunk = min(sums, key=sums.get)
    entry = dict(C=chunk, **{n: tuple(s) for n, (s, _) in best[chunk].items()})
    return {"key": list(key), "launch": entry, "kernel_ms_sum": sums, "best": best, "trials": trials}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=32768)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--chunks", type=int, nargs="+", default=[32, 64])
    p.add_argument("--blocks", type=int, nargs="+", default=[64], help="feature blocks BM to try")
    p.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    p.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, float32 (CPU: interpreted): checks the script")
    p.add_argument("--out", default="runs/tune_performer")
    args = p.parse_args(argv)
    if args.smoke:
        args.T, args.heads, args.kv_heads, args.head_dim, args.features, args.dtype = 80, 2, 1, 32, 64, "float32"
        args.chunks, args.blocks, args.warps, args.stages, args.steps = [32], [32, 64], [4], [1], 1
    elif not torch.cuda.is_available():
        raise SystemExit("tune_performer needs a CUDA GPU (or --smoke for a CPU check).")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = tune(args, device, getattr(torch, args.dtype))
    result["info"] = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "T": args.T,
                      "heads": args.heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim,
                      "features": args.features, "dtype": args.dtype}
    print(f"LAUNCH[{tuple(result['key'])}] = {result['launch']}")
    print("kernels' ms by chunk: " + ", ".join(f"C={c}: {t:.3f}" for c, t in result["kernel_ms_sum"].items()))
    write_text_atomic(Path(args.out) / "tune_performer.json", json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
