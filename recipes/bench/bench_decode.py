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

`--compare` measures instead what compiling the decoding step buys, all through `model.generate` in one process:
sdpa with its DynamicCache, sdpa with transformers' static cache + torch.compile (`cache_implementation="static"`,
compiled by `generate` itself), and holo/performer with `RecurrentCache()` (eager) and `RecurrentCache(static=True)`
(compiled, CUDA graphs), with `--window W` as window hybrids (4 sinks), at `--contexts` (default 16k) for `--steps`
tokens, with ratios against both sdpa baselines and each compiled variant's generated logits against full forwards.
On a GPU each setting is also run under the profiler: its GPU busy time per token beside its wall time per token
shows whether the GPU or the host bounds it. `--settings` times only the named variant settings (e.g. the compiled
ones: the eager window hybrids are slow to time); the two sdpa baselines always run. Writes `compare.json` and
`compare.md`.

    python recipes/bench/bench_decode.py --model-path DIR --out results/decode --compare     # H200: ~3 min
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, CompileConfig, LlamaConfig, LogitsProcessor

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


class _StepClock(LogitsProcessor):
    """Marks the time after the prefill's logits (synchronised) and counts the decoding steps after it, so the
    prefill stays out of the decode rate; changes no logits."""

    def __init__(self, device: str):
        self.device, self.t0, self.steps = device, None, -1

    def __call__(self, input_ids, scores):
        self.steps += 1
        if self.t0 is None:
            sync(self.device)
            self.t0 = time.perf_counter()
        return scores


# (label, attention, generate kwargs as a function of a fresh-or-reset cache); "cache" objects are reused
COMPARED = (("sdpa dynamic", "sdpa", "dynamic"), ("sdpa static+compile", "sdpa", "static"),
            ("holo", "holo", "recurrent"), ("holo compiled", "holo", "recurrent static"),
            ("performer", "performer", "recurrent"), ("performer compiled", "performer", "recurrent static"))


def _cache_kwargs(kind: str, cache) -> dict:
    """generate kwargs of one compared setting; `cache` is the RecurrentCache to reuse (reset) or None."""
    if kind == "dynamic":
        return {}
    if kind == "static":
        return {"cache_implementation": "static"}  # generate keeps and resets its StaticCache between calls
    cache.reset()
    return {CACHE_KWARG: cache}


@torch.no_grad()
def generate_timed(model, ids, steps: int, device: str, kind: str, cache, compile_all: bool) -> tuple[float, torch.Tensor,
                                                                                                 torch.Tensor]:
    """Greedy `generate` of `steps + 1` tokens: decode tokens/s after the prefill, the sequences and the scores."""
    clock = _StepClock(device)
    extra = {}
    if compile_all:  # CPU smoke runs: compile there too (CUDA graphs apply on CUDA only)
        extra["compile_config"] = CompileConfig(mode="default")
        extra["compile_config"]._compile_all_devices = True
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps + 1,
                         min_new_tokens=steps + 1, do_sample=False, pad_token_id=0, logits_processor=[clock],
                         output_scores=True, return_dict_in_generate=True, **_cache_kwargs(kind, cache), **extra)
    sync(device)
    return clock.steps / (time.perf_counter() - clock.t0), out.sequences, torch.stack(out.scores, 1).float()


def device_ms_per_token(model, ids, steps: int, device: str, kind: str, cache, compile_all: bool) -> float | None:
    """GPU busy time per decoded token (kernel time the profiler sees, prefill taken out), None off CUDA.

    Against the wall time per token it says what bounds a setting: a step whose GPU time is a small part of its
    wall time is bound by the host (Python, launches, `generate`'s own work per token), not by attention.
    """
    if device != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    busy = []
    for n in (0, steps):  # generate with no decoding steps after the prefill, then with `steps`
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            generate_timed(model, ids, n, device, kind, cache, compile_all)
        busy.append(sum(e.self_device_time_total for e in prof.key_averages()) / 1000)
    return (busy[1] - busy[0]) / steps


@torch.no_grad()
def generate_drift(model, sequences, scores) -> dict:
    """Generated logits against one full forward over the same tokens: relative difference, argmax agreement."""
    new = scores.shape[1]
    full = model(input_ids=sequences[:, :-1]).logits[:, -new:].float()
    seen = torch.isfinite(scores)  # min_new_tokens sets the EOS logit to -inf
    scores, full = scores.where(seen, 0.0), full.where(seen, 0.0)
    return {"rel_diff": ((scores - full).norm() / full.norm()).item(),
            "argmax_agree": (scores.argmax(-1) == full.argmax(-1)).float().mean().item()}


def compare(args, device: str, dtype) -> None:
    """The table `--compare` prints and writes: tokens/s per setting and context, ratios to both sdpa baselines."""
    contexts, steps = ([64], 4) if args.smoke else (args.contexts, args.steps)
    rows = []
    for label, attn, kind in COMPARED:
        if args.settings and attn != "sdpa" and label not in args.settings:
            continue
        model = load(args, attn, device, dtype)
        if args.window and attn != "sdpa":  # the conversions' window hybrids (4 sinks); sdpa stays full attention
            hf_attn.set_window(model, args.window)
            label = label.replace(attn, f"{attn} + window {args.window}")
        cache = hf_attn.RecurrentCache(static=kind.endswith("static")) if kind.startswith("recurrent") else None
        compile_all = args.smoke and kind.endswith("static")
        for t in contexts:
            ids = torch.randint(5, model.config.vocab_size, (1, t), generator=torch.Generator().manual_seed(t)).to(device)
            generate_timed(model, ids, steps, device, kind, cache, compile_all)  # warm-up: compile, graphs, same shapes
            tps, seqs, scores = generate_timed(model, ids, steps, device, kind, cache, compile_all)
            short = ids[:, :290]
            _, s_seqs, s_scores = generate_timed(model, short, 10, device, kind, cache, compile_all)
            gpu_ms = device_ms_per_token(model, ids, steps, device, kind, cache, compile_all)
            rows.append({"setting": label, "T": t, "tokens_per_s": round(tps, 2), "wall_ms_per_token": 1000 / tps,
                         "gpu_ms_per_token": gpu_ms, **generate_drift(model, s_seqs, s_scores)})
            print(rows[-1], flush=True)
        del model, cache
        if device == "cuda":
            torch.cuda.empty_cache()
    base = {(r["setting"], r["T"]): r["tokens_per_s"] for r in rows}
    lines = ["| setting | context | tokens/s | x sdpa dynamic | x sdpa static+compile | wall ms/token "
             "| GPU busy ms/token | rel. diff vs full | argmax agree |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        dyn, sta = base[("sdpa dynamic", r["T"])], base[("sdpa static+compile", r["T"])]
        gpu = "n/a" if r["gpu_ms_per_token"] is None else f"{r['gpu_ms_per_token']:.2f}"
        lines.append(f"| {r['setting']} | {r['T']} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / dyn:.2f} | "
                     f"{r['tokens_per_s'] / sta:.2f} | {r['wall_ms_per_token']:.2f} | {gpu} | {r['rel_diff']:.2e} | "
                     f"{r['argmax_agree']:.2f} |")
    md = "\n".join(lines)
    env = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
           "model": args.model_path or "tiny random Llama (smoke)", "dtype": str(dtype), "steps": steps}
    out = Path(args.out)
    write_text_atomic(out / "compare.json", json.dumps({"env": env, "rows": rows}, indent=1))
    write_text_atomic(out / "compare.md", md + "\n")
    print(md)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-path", help="folder with SmolLM2 config + safetensors")
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny random Llama, short contexts")
    p.add_argument("--prefill", type=int, nargs="*", default=[2048, 16384])
    p.add_argument("--decode", type=int, nargs="*", default=[1024, 16384])
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--compare", action="store_true",
                   help="compiled vs eager decoding through generate (sdpa dynamic/static+compile, holo, performer)")
    p.add_argument("--contexts", type=int, nargs="*", default=[16384], help="prompt lengths for --compare")
    p.add_argument("--window", type=int, default=0,
                   help="--compare: holo/performer as window hybrids of this window (and 4 sinks); 0 = none")
    p.add_argument("--settings", nargs="*", metavar="SETTING",
                   help="--compare: time only these of " + ", ".join(repr(c[0]) for c in COMPARED[2:])
                   + " (the two sdpa baselines always run)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.settings or ()) - {c[0] for c in COMPARED})
    if unknown:
        p.error(f"unknown --settings {unknown}; choose from {[c[0] for c in COMPARED[2:]]}")
    if not args.smoke and not args.model_path:
        p.error("--model-path is required unless --smoke")
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    if args.compare:
        return compare(args, device, dtype)
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
