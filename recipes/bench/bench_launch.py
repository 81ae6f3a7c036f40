"""Host cost of the kernels' launches: `launch`'s direct path against Triton's own, in one process.

One forward + backward of holo's, performer's and gauge's kernels at a short length (default 256 tokens), where
each kernel finishes before the host has issued the next, so the time per call is the host's: the Triton
launches (holo 7, performer 7, gauge 5) and the PyTorch ops around them. Each call is timed with the direct
path on (`hf_attn.kernels.launch.DIRECT`, the default) and off (every launch through `kernel[grid]`), in
alternating rounds so that a drift in the host's speed falls on both alike.

    python recipes/bench/bench_launch.py --out DIR               # CUDA, bf16
    python recipes/bench/bench_launch.py --smoke --out DIR       # CPU (Triton's interpreter, tiny): checks the script
Writes launch.json and launch.md under --out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from hf_attn.attention.gauge.kernel import gauge_flash
from hf_attn.attention.holo.kernel import holo_causal
from hf_attn.attention.performer.features import key_stabiliser_value, random_features
from hf_attn.attention.performer.kernel import performer_causal
from hf_attn.kernels import launch
from hf_attn.utils import write_text_atomic


def calls(heads: int, kv_heads: int, t: int, d: int, device: str, dtype) -> dict:
    """Per kernel, a function running one forward + backward."""
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, heads, t, d, device=device, generator=gen).to(dtype).requires_grad_()
    k, v = (torch.randn(1, kv_heads, t, d, device=device, generator=gen).to(dtype).requires_grad_() for _ in "kv")
    w, stab = random_features(d, 256, 0, device), key_stabiliser_value(d, 256, 0)
    return {
        "holo": lambda: holo_causal(q, k, v)[0].sum().backward(),
        "performer": lambda: performer_causal(q, k, v, w, d**-0.25, key_stab=stab)[0].sum().backward(),
        "gauge": lambda: gauge_flash(q, k, v, None, d**-0.5).sum().backward(),
    }


def per_call_ms(fn, n: int, sync) -> float:
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t0) / n * 1e3


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, 1 round (checks the script)")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--calls", type=int, default=100, help="calls per timed round")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.smoke
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    if args.smoke:
        args.tokens, args.head_dims, args.heads, args.kv_heads, args.calls, args.rounds = 32, [16], 2, 1, 1, 1
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = []
    for d in args.head_dims:
        for name, fn in calls(args.heads, args.kv_heads, args.tokens, d, device, dtype).items():
            times = {True: [], False: []}
            for direct in (True, False):  # warm-up: compile, fill both paths' caches
                launch.DIRECT = direct
                fn()
            try:
                for _ in range(args.rounds):
                    for direct in (True, False):
                        launch.DIRECT = direct
                        times[direct].append(per_call_ms(fn, args.calls, sync))
            finally:
                launch.DIRECT = True
            on, off = statistics.median(times[True]), statistics.median(times[False])
            rows.append({"kernel": name, "head_dim": d, "direct_ms": on, "triton_ms": off, "saved_ms": off - on})
            print(f"{name:9s} head_dim {d:3d}: direct {on:.3f} ms, Triton's path {off:.3f} ms per fwd+bwd", flush=True)
    env = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
           "dtype": str(dtype), **{k: getattr(args, k) for k in ("tokens", "heads", "kv_heads", "calls", "rounds")}}
    out = Path(args.out)
    write_text_atomic(out / "launch.json", json.dumps({"env": env, "rows": rows}, indent=1))
    lines = ["| kernel | head_dim | direct ms | Triton's path ms | saved ms per fwd+bwd |", "|---|---|---|---|---|"]
    lines += [f"| {r['kernel']} | {r['head_dim']} | {r['direct_ms']:.3f} | {r['triton_ms']:.3f} | {r['saved_ms']:.3f} |"
              for r in rows]
    write_text_atomic(out / "launch.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
