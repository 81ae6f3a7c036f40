"""Step-time overhead of Prismatic vs the unwrapped model: forward + backward + AdamW step, full fine-tune.

    python recipes/bench/bench_prismatic.py --model-path DIR --out runs/bench_prismatic          # GPU, bf16, T=2048, K=3
    python recipes/bench/bench_prismatic.py --smoke --out /tmp/bench_prismatic                   # CPU, tiny Llama

Rows: `base` (unwrapped, sdpa), `v2-mlp` (K views of every MLP, base trained: perturbation values follow
every optimiser step, the selection is re-ranked every `mask_refresh_steps` = 100 updates, the default),
`v2-mlp-refresh1` (re-ranked after every update, the literal per-forward selection), `v2-mlp-frozen` (router only),
`v3-rope` (v3 on attention, RoPE chosen),
`v3-alibi` (v3 forced to ALiBi: SDPA with a materialised float mask). Target: v2-mlp <= 1.5x base at K = 3.
Prints a table and writes `<out>/bench_prismatic.json`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import hf_attn
from hf_attn.adapters.prismatic import PrismaticConfig, force_expert
from hf_attn.utils import write_text_atomic

CASES = {
    "base": None,
    "v2-mlp": dict(version="v2", freeze_base=False),
    "v2-mlp-refresh1": dict(version="v2", freeze_base=False, mask_refresh_steps=1),
    "v2-mlp-frozen": dict(version="v2", freeze_base=True),
    "v3-rope": dict(version="v3", num_experts=2, perturbation_scale=0.0, freeze_base=False),
    "v3-alibi": dict(version="v3", num_experts=2, perturbation_scale=0.0, freeze_base=False),
}


def build(args, case: str):
    from transformers import AutoModelForCausalLM, LlamaConfig

    dtype = getattr(torch, args.dtype)
    if args.smoke:
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=dtype, attn_implementation="sdpa")
    model = model.to(args.device).train()
    if CASES[case] is not None:
        hf_attn.wrap(model, PrismaticConfig(num_experts=CASES[case].get("num_experts", args.experts),
                                            **{k: v for k, v in CASES[case].items() if k != "num_experts"}))
        if case == "v3-alibi":
            force_expert(model, 1)
    return model


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_case(args, case: str) -> dict:
    model = build(args, case)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    vocab = model.config.vocab_size
    x = torch.randint(0, vocab, (args.batch, args.seq_len), device=args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.iters):
        sync(args.device)
        t0 = time.perf_counter()
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(args.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    step = times[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
    del model, opt
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"case": case, "step_s": step, "tokens_per_s": args.batch * args.seq_len / step, "peak_gib": peak}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", help="SmolLM2 folder (from_pretrained); not needed with --smoke")
    p.add_argument("--smoke", action="store_true", help="tiny random Llama on CPU, T=128")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--experts", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--out", default="runs/bench_prismatic")
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.dtype, args.seq_len, args.batch, args.warmup, args.iters = "cpu", "float32", 128, 2, 1, 2
        torch.set_num_threads(1)
    else:
        if not args.model_path:
            p.error("--model-path is required (or --smoke)")
        args.device, args.dtype = "cuda", "bfloat16"
    rows = [time_case(args, c) for c in args.cases.split(",")]
    base = next((r["step_s"] for r in rows if r["case"] == "base"), None)
    print(f"{'case':<15}{'step ms':>10}{'tok/s':>12}{'x base':>8}{'peak GiB':>10}")
    for r in rows:
        r["ratio"] = r["step_s"] / base if base else float("nan")
        print(f"{r['case']:<15}{r['step_s'] * 1e3:>10.1f}{r['tokens_per_s']:>12.0f}{r['ratio']:>8.2f}{r['peak_gib']:>10.2f}")
    meta = {k: getattr(args, k) for k in ("seq_len", "batch", "experts", "dtype", "device", "smoke", "iters")}
    if args.device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name()
    meta.update(torch=torch.__version__, transformers=__import__("transformers").__version__)
    write_text_atomic(Path(args.out) / "bench_prismatic.json", json.dumps({"meta": meta, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
