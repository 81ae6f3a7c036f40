"""Model-level benchmark on SmolLM2: prefill and decode tokens/s of holo/performer vs sdpa.

Prefill: one forward over `--prefill` contexts (default 2k, 16k), logits for the last token only.
Decode: after a prompt of `--decode` length (default 1k, 16k), `--steps` greedy single-token forwards;
sdpa keeps its DynamicCache, holo/performer a `hf_attn.RecurrentCache` (constant-size state).

    python recipes/bench/bench_decode.py --model-path DIR --out results/decode      # H100: ~2 min
    python recipes/bench/bench_decode.py --smoke --out /tmp/decode                  # CPU, tiny random Llama
Also checks what the cache is for: the logits of 10 cached decoding steps after a 290-token prompt against full
forwards over the same tokens (relative difference and argmax agreement; fp32 agrees to ~1e-6, bf16 rounds
differently along the two paths).
Writes `decode.json`, `decode.md` and `decode.png` under --out.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import hf_attn
from hf_attn.harness.decode import decode_speed, new_cache
from hf_attn.measure import sync
from hf_attn.utils import CACHE_KWARG, write_text_atomic

VARIANTS = ("sdpa", "holo", "performer")


def load(args, attn: str, device: str, dtype):
    if args.smoke:
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
        model = AutoModelForCausalLM.from_config(cfg)
        hf_attn.set_attention(model, attn)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=dtype, attn_implementation=attn)
    return model.to(device, dtype).eval()


@torch.no_grad()
def prefill_tps(model, t: int, device: str, reps: int = 3) -> float:
    ids = torch.randint(5, model.config.vocab_size, (1, t), device=device)
    model(input_ids=ids, use_cache=False, logits_to_keep=1)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
    sync(device)
    return reps * t / (time.perf_counter() - t0)


@torch.no_grad()
def decode_drift(model, attn: str, device: str, prompt: int = 290, steps: int = 10) -> dict:
    """Cached decoding vs full forwards: relative logit difference and share of equal argmaxes."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (1, prompt + steps), generator=g).to(device)
    cache = new_cache(model)
    model(input_ids=ids[:, :prompt], **{CACHE_KWARG: cache}, use_cache=True, logits_to_keep=1)
    cached = torch.stack([model(input_ids=ids[:, t:t + 1], **{CACHE_KWARG: cache}, use_cache=True).logits[:, -1]
                          for t in range(prompt, prompt + steps)], 1).float()
    full = model(input_ids=ids).logits[:, prompt:].float()
    return {"attn": attn, "rel_diff": ((cached - full).norm() / full.norm()).item(),
            "argmax_agree": (cached.argmax(-1) == full.argmax(-1)).float().mean().item()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", help="folder with SmolLM2 config + safetensors")
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny random Llama, short contexts")
    p.add_argument("--prefill", type=int, nargs="*", default=[2048, 16384])
    p.add_argument("--decode", type=int, nargs="*", default=[1024, 16384])
    p.add_argument("--steps", type=int, default=64)
    args = p.parse_args(argv)
    if not args.smoke and not args.model_path:
        p.error("--model-path is required unless --smoke")
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    prefill, decode, steps = ([64, 128], [64, 128], 8) if args.smoke else (args.prefill, args.decode, args.steps)
    rows, drift = [], []
    for attn in VARIANTS:
        model = load(args, attn, device, dtype)
        drift.append(decode_drift(model, attn, device, *((40, 5) if args.smoke else ())))
        print(drift[-1], flush=True)
        for t in prefill:
            rows.append({"attn": attn, "kind": "prefill", "T": t, "tokens_per_s": round(prefill_tps(model, t, device), 1)})
            print(rows[-1], flush=True)
        for t in decode:
            tps, mib = decode_speed(model, t, steps, device)
            rows.append({"attn": attn, "kind": "decode", "T": t, "tokens_per_s": round(tps, 1), "cache_MiB": round(mib, 3)})
            print(rows[-1], flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    base = {(r["kind"], r["T"]): r["tokens_per_s"] for r in rows if r["attn"] == "sdpa"}
    lines = ["| attn | kind | context | tokens/s | x sdpa | cache MiB |", "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["tokens_per_s"] / base[(r["kind"], r["T"])]
        lines.append(f"| {r['attn']} | {r['kind']} | {r['T']} | {r['tokens_per_s']:.1f} | {ratio:.2f} | "
                     f"{r.get('cache_MiB', '-')} |")
    lines += ["", "Cached decoding vs full forwards (logits of the last steps):", "",
              "| attn | relative difference | argmax agreement |", "|---|---|---|"]
    lines += [f"| {d['attn']} | {d['rel_diff']:.2e} | {d['argmax_agree']:.2f} |" for d in drift]
    md = "\n".join(lines)
    out = Path(args.out)
    env = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
           "model": args.model_path or "tiny random Llama (smoke)", "dtype": str(dtype)}
    write_text_atomic(out / "decode.json", json.dumps({"env": env, "rows": rows, "drift": drift}, indent=1))
    write_text_atomic(out / "decode.md", md + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind in zip(axes, ("prefill", "decode")):
        for i, attn in enumerate(VARIANTS):
            pts = [r for r in rows if r["attn"] == attn and r["kind"] == kind]
            ax.bar([j + 0.27 * i for j in range(len(pts))], [r["tokens_per_s"] for r in pts], 0.27, label=attn)
            ax.set_xticks(range(len(pts)), [str(r["T"]) for r in pts])
        ax.set_title(f"{kind} tokens/s")
        ax.set_xlabel("context")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "decode.png", dpi=120)
    print(md)


if __name__ == "__main__":
    main()
