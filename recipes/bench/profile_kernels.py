"""Per-kernel device time of one causal forward+backward (torch.profiler), for tuning the Triton kernels.

    python recipes/bench/profile_kernels.py                          # holo and performer, bf16, B1 H16 D64, T=16k
    python recipes/bench/profile_kernels.py --variants holo --kv-heads 4 --head-dim 128 --dtype float32

Prints, per variant, the mean device milliseconds of every kernel (Triton and PyTorch) over `--steps` steps
after warm-up, largest first, and their sum. Unlike `bench_kernels.py` this leaves the host's launch cost out
and says which kernel to work on. Without CUDA (`--T 256` or so) it profiles the CPU ops instead, which only
checks the script.
"""
from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch

import hf_attn


def profile_step(step, steps: int, cuda: bool) -> dict[str, float]:
    """Kernel (CPU: op) name -> mean self milliseconds per step."""
    from torch.profiler import ProfilerActivity, profile

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):
        step()
    sync()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
        sync()
    out = {}
    for e in prof.key_averages():
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        if us > 0 and (not cuda or e.device_type == torch.autograd.DeviceType.CUDA):  # kernels, not the ops
            # that launched them (an autograd.Function's "self" time would count its Triton kernels again)
            out[e.key] = us / 1e3 / steps
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="holo,performer")
    p.add_argument("--T", type=int, default=16384)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=None, help="key/value heads (GQA); default = --heads")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    device, dtype, hkv = "cuda" if cuda else "cpu", getattr(torch, args.dtype), args.kv_heads or args.heads
    module = SimpleNamespace(is_causal=True, layer_idx=0, training=False, config=SimpleNamespace())
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, h, args.T, args.head_dim, generator=g, device=device).to(dtype).requires_grad_()
               for h in (args.heads, hkv, hkv))
    grad = torch.randn(1, args.T, args.heads, args.head_dim, generator=g, device=device).to(dtype)
    for name in args.variants.split(","):
        fn = hf_attn.get_variant(name).function

        def step():
            out = fn(module, q, k, v, None)[0]
            torch.autograd.grad(out, (q, k, v), grad)

        times = profile_step(step, args.steps, cuda)
        print(f"== {name}: T={args.T} heads {args.heads}/{hkv} head_dim {args.head_dim} {args.dtype}, "
              f"{device} ms per fwd+bwd (sum {sum(times.values()):.3f})")
        for kernel, ms in times.items():
            print(f"  {ms:8.3f}  {kernel[:90]}")


if __name__ == "__main__":
    main()
