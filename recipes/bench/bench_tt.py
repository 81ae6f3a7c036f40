"""Step time and peak memory of a TT-wrapped causal LM vs the dense one (forward + backward, sdpa).

GPU (SmolLM2 folder from save_pretrained, or random weights from recipes/bench/random_weights.py):
    python recipes/bench/bench_tt.py --model-path DIR --out results/bench_tt
CPU smoke test on a tiny random Llama:
    python recipes/bench/bench_tt.py --smoke --out /tmp/bench_tt

Every configuration gets a fresh copy of the model. The TT models are wrapped with `keep_base=False` (the dense
projection weights are freed) and, like the dense baseline, train every parameter unless --freeze-base, so
the only difference between rows is dense projections vs TT cores. Each rank runs once per `--contractions`
mode (hf_attn.tt: 'cores' = the core chain, 'dense' = rebuild W then one GEMM, 'auto' = the default choice).
A projection-level table times one hidden x hidden layer, fwd+bwd, for 'cores' and 'dense' across row counts,
the evidence for where `hf_attn.tt.DENSE_MIN_ROWS` should sit (on the H100 it showed launch overhead at every
row count, so the value is a conservative cut-off: docs/tt.md). Token ids are random: step time and memory do not
depend on the text.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import hf_attn
from hf_attn.adapters.tt import tt_report
from hf_attn.adapters.tt.decompose import DENSE_MIN_ROWS
from hf_attn.utils import write_text_atomic


def load(args):
    from transformers import AutoModelForCausalLM, LlamaConfig

    if args.smoke:
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=512, hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096,
        )
        return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(args.model_path, attn_implementation="sdpa", dtype=torch.float32)


def load_hidden(args) -> int:
    from transformers import AutoConfig

    return 96 if args.smoke else AutoConfig.from_pretrained(args.model_path).hidden_size


def attention_params(model) -> int:
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    return sum(m.weight.numel() for n, m in model.named_modules() if n.endswith(names) and hasattr(m, "weight"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model, args, device, dtype) -> dict:
    """Median step time over `--steps` timed forward+backward steps after `--warmup` ones; peak memory."""
    model.to(device=device, dtype=dtype).train()
    if not args.freeze_base:
        for p in model.parameters():
            p.requires_grad_(p.numel() > 0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len), generator=g).to(device)
    times = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t0 = time.perf_counter()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    step_s = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"step_ms": step_s * 1e3, "tokens_per_s": args.batch * args.seq_len / step_s, "peak_mem_gib": peak,
            "loss": loss.item()}


def projection_bench(hidden: int, args, device, dtype) -> list[dict]:
    """One hidden x hidden projection, fwd+bwd (weight gradients included): dense nn.Linear vs a rank-16
    TTMatrixLinear per contraction, for several row counts up to batch * seq_len."""
    from hf_attn.adapters.tt.decompose import TTMatrixLinear

    dense = torch.nn.Linear(hidden, hidden, bias=False)
    layers = {"dense": dense}
    for mode in ("cores", "dense"):
        layers[f"tt r=16 {mode}"] = TTMatrixLinear.from_weight(dense.weight.detach(), 16, args.num_cores,
                                                              contraction=mode)[0]
    out = []
    total = args.batch * args.seq_len
    for rows in sorted({r for r in (1, 16, 128, 512, 2048, total) if r <= total}):
        x = torch.randn(rows, hidden, device=device, dtype=dtype, requires_grad=True)
        for name, layer in layers.items():
            layer.to(device=device, dtype=dtype)
            times = []
            for _ in range(args.warmup + 3 * args.steps):
                sync(device)
                t0 = time.perf_counter()
                layer(x).sum().backward()
                sync(device)
                times.append(time.perf_counter() - t0)
            out.append({"rows": rows, "config": name, "ms": statistics.median(times[args.warmup :]) * 1e3})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-path", help="from_pretrained folder of the model (SmolLM2-135M)")
    p.add_argument("--smoke", action="store_true", help="tiny random Llama, small sizes (CPU check)")
    p.add_argument("--ranks", default="4,8,16,32,64")
    p.add_argument("--num-cores", type=int, default=3)
    p.add_argument("--contractions", default="cores,auto", help="TTConfig.contraction modes to time per rank")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--freeze-base", action="store_true", help="train only the TT cores (dense: nothing frozen)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="results/bench_tt")
    args = p.parse_args(argv)
    if args.smoke:  # CPU check that the script runs; its timings mean nothing on a shared CPU
        args.seq_len, args.batch, args.steps, args.warmup = min(args.seq_len, 64), min(args.batch, 2), 2, 1
        torch.set_num_threads(1)
    elif not args.model_path:
        p.error("--model-path DIR is required (or --smoke)")
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)

    rows = []
    dense_model = load(args)
    dense_attn = attention_params(dense_model)
    rows.append({"config": "dense", "rank": None, "attn_params": dense_attn, "attn_param_ratio": 1.0,
                 "mean_rel_error": 0.0, **measure(dense_model, args, device, dtype)})
    del dense_model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    for rank in [int(r) for r in args.ranks.split(",")]:
        for mode in args.contractions.split(","):
            model = load(args)
            hf_attn.wrap(model, hf_attn.TTConfig(rank=rank, num_cores=args.num_cores, keep_base=False,
                                                 contraction=mode))
            report = tt_report(model)
            rows.append({"config": f"tt r={rank} {mode}", "rank": rank, "contraction": mode,
                         "attn_params": report["wrapped_tt_params"], "attn_param_ratio": report["wrapped_param_ratio"],
                         "mean_rel_error": report["mean_rel_error"], **measure(model, args, device, dtype)})
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    hidden = load_hidden(args)
    proj = projection_bench(hidden, args, device, dtype)
    base = rows[0]
    for r in rows:
        r["step_ratio"] = r["step_ms"] / base["step_ms"]
        r["mem_ratio"] = r["peak_mem_gib"] / base["peak_mem_gib"] if device.type == "cuda" else float("nan")

    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "python": sys.version.split()[0], "dtype": args.dtype,
           "batch": args.batch, "seq_len": args.seq_len, "steps": args.steps, "num_cores": args.num_cores,
           "dense_min_rows": DENSE_MIN_ROWS,
           "freeze_base": args.freeze_base, "model": "tiny random Llama (smoke)" if args.smoke else args.model_path}
    import transformers

    env["transformers"] = transformers.__version__
    print(f"# {env['model']} on {env['device']}, {args.dtype}, batch {args.batch} x T {args.seq_len}, fwd+bwd")
    print(f"{'config':>16} {'attn params':>12} {'ratio':>6} {'rel err':>8} {'step ms':>9} {'x dense':>8} "
          f"{'tok/s':>10} {'peak GiB':>9} {'x dense':>8}")
    for r in rows:
        print(f"{r['config']:>16} {r['attn_params']:>12,} {r['attn_param_ratio']:>6.3f} {r['mean_rel_error']:>8.3f} "
              f"{r['step_ms']:>9.1f} {r['step_ratio']:>8.2f} {r['tokens_per_s']:>10,.0f} {r['peak_mem_gib']:>9.2f} "
              f"{r['mem_ratio']:>8.2f}")
    print(f"# one {hidden} x {hidden} projection alone, fwd+bwd (ms; x the dense nn.Linear at the same rows)")
    dense_ms = {r["rows"]: r["ms"] for r in proj if r["config"] == "dense"}
    for p_row in proj:
        print(f"{p_row['rows']:>6} rows {p_row['config']:>16} {p_row['ms']:>9.3f} ms "
              f"{p_row['ms'] / dense_ms[p_row['rows']]:>6.2f} x dense")
    for r16 in (r for r in rows if r["rank"] == 16):
        ok = r16["attn_param_ratio"] <= 0.25 and r16["step_ratio"] <= 1.3
        print(f"target at rank 16, {r16['contraction']} (attention params <= 25% of dense, step <= 1.3x dense): "
              f"{r16['attn_param_ratio']:.1%}, {r16['step_ratio']:.2f}x -> {'MET' if ok else 'NOT MET'}")
    out = Path(args.out) / "bench_tt.json"
    write_text_atomic(out, json.dumps({"env": env, "rows": rows, "projection": proj}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
