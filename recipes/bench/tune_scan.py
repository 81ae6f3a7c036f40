"""Time the block-scan kernel (`hf_attn/kernels/scan.py`) over its launch settings on holo- and performer-shaped
states, to choose `column_block` and `WARPS`.

    python recipes/bench/tune_scan.py --out results/scan        # H100: ~1 min
    python recipes/bench/tune_scan.py --smoke --out /tmp/scan   # CPU under TRITON_INTERPRET=1, tiny shapes

For each shape it prints and writes (`scan.json`) the median ms and the bandwidth of every (columns per program,
blocks per step, warps), fastest first, and marks the setting `scan_blocks_` uses.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import triton

from bench_kernels import timed  # recipes/bench/ is on sys.path when this runs as a script
from hf_attn.kernels import scan
from hf_attn.utils import write_text_atomic

SHAPES = {  # name: rows (batch x heads), blocks (T / 64), state width, dtype
    "performer_16k_bf16": (16, 256, 256 * 64, torch.bfloat16),
    "performer_64k_bf16": (16, 1024, 256 * 64, torch.bfloat16),
    "performer_16k_fp32": (16, 256, 256 * 64, torch.float32),
    "holo_16k": (16, 256, 64, torch.float32),
}


def tune(rows: int, blocks: int, width: int, dtype: torch.dtype, device: str, reps: int) -> list[dict]:
    x = torch.randn(rows, blocks, width, device=device).to(dtype)
    total = torch.empty(rows, width, device=device)
    moved_gb = 2 * x.numel() * x.element_size() / 1e9
    chosen = (scan.column_block(width), scan.TILE // scan.column_block(width), scan.WARPS)
    out = []
    for bw in (16, 32, 64, 128, 256, 512):
        for cb in (8, 16, 32, 64, 128):
            if bw > triton.next_power_of_2(width) or not 512 <= bw * cb <= 16384:
                continue
            for warps in (2, 4, 8):
                def launch():
                    scan._scan_blocks[(rows, triton.cdiv(width, bw))](x, x, total, x, x, total, blocks, width, 0,
                                                                     triton.cdiv(width, bw), BW=bw, CB=cb, BWY=32,
                                                                     CBY=128, REVERSE=False, HAS_INIT=False,
                                                                     num_warps=warps)
                ms = timed(launch, device, max_reps=reps)
                out.append({"BW": bw, "CB": cb, "warps": warps, "ms": ms, "GB_per_s": moved_gb / ms * 1e3,
                            "chosen": (bw, cb, warps) == chosen})
    return sorted(out, key=lambda r: r["ms"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 2 repetitions (checks the script on CPU)")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    shapes = {"tiny": (2, 20, 64, torch.bfloat16)} if args.smoke else SHAPES
    results = {}
    for name, (rows, blocks, width, dtype) in shapes.items():
        results[name] = tune(rows, blocks, width, dtype, device, 2 if args.smoke else 30)
        best, chosen = results[name][0], next(r for r in results[name] if r["chosen"])
        print(f"{name}: best BW={best['BW']} CB={best['CB']} warps={best['warps']} {best['ms']:.4f} ms; "
              f"chosen {chosen['ms']:.4f} ms", flush=True)
    env = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__}
    write_text_atomic(Path(args.out) / "scan.json", json.dumps({"env": env, "results": results}, indent=1))


if __name__ == "__main__":
    main()
