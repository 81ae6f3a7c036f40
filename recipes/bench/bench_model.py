"""Model-level training-step benchmark: what each attention buys in a whole Llama-shaped training step.

A `LlamaForCausalLM` with random weights (the same for every attention; speed does not depend on the values),
bf16, batch 1, `--hidden 2048 --layers 4 --intermediate 8192 --vocab 32000`, heads = hidden / head_dim, key/value
heads = heads / --gqa. One step = forward with `labels=input_ids` + `loss.backward()` + zeroing the gradients (no
optimizer). The models of one (head_dim, T) are built together and timed in turns, one step each per round (2
warm-up rounds, then --reps): median step ms (CUDA events) and each model's own peak memory (max_memory_allocated).
A `floor` row per (head_dim, T) runs the same model with a null attention (the value heads, nothing mixed), so
`attention ms = step - floor`, and `sdpa step / floor` is the most any attention could gain over sdpa.

    python recipes/bench/bench_model.py --out results/model_step               # CUDA: D = 64, 128; T = 4k, 32k
    python recipes/bench/bench_model.py --out results/model_step --profile     # + kernel time by the profiler
    python recipes/bench/bench_model.py --smoke --out /tmp/model_step          # CPU, tiny sizes: checks the script
Writes `model_step.json`, `model_step.md` and `model_step.png` under --out.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
import transformers
from tqdm import tqdm
from transformers import AttentionInterface, AutoModelForCausalLM, LlamaConfig

import hf_attn
from hf_attn.utils import atomic_path, write_text_atomic
from profile_kernels import profile_step  # recipes/bench/ is on sys.path when this runs as a script

FLOOR = "bench_null"
RAW_KEYS = ("head_dim", "T", "attn", "step_ms", "peak_GiB", "attention_kernel_ms", "total_kernel_ms", "error")
# Substrings of the names of attention kernels: hf-attn's Triton kernels (`*_fwd`, `*_bwd`, the block scan
# `_scan_blocks`) and sdpa's flash, cuDNN and memory-efficient (`fmha`) kernels. The rest is the model around them.
ATTENTION_KERNEL_MARKERS = ("_fwd", "_bwd", "flash", "cudnn", "fmha", "_scan_blocks")


def null_attention(module, query, key, value, attention_mask, **kwargs):
    """The value heads as the output, nothing mixed: the step without attention. Query and keys enter times 0 so
    their projections' backward stays in the floor as it is in every real attention."""
    reps = query.shape[1] // value.shape[1]
    value, key = (x.repeat_interleave(reps, dim=1) for x in (value, key))
    return (value + 0 * (query + key)).transpose(1, 2).contiguous(), None


AttentionInterface.register(FLOOR, null_attention)


def build(args, attn: str, head_dim: int, device: str, dtype):
    heads = args.hidden // head_dim
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=heads, head_dim=head_dim,
                      num_key_value_heads=max(1, heads // args.gqa), max_position_embeddings=max(args.lengths))
    torch.manual_seed(0)  # the same weights for every attention
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=dtype)
    return model.train()


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e)[:160]}"


def _timed_step(step, device: str, own_bytes: int) -> tuple[float, float | None]:
    """One step's ms (CUDA events on GPU) and, on CUDA, the GiB its model would peak at alone: the step's peak
    over what was allocated before it (the other models' weights), plus this model's own weights."""
    if device != "cuda":
        t0 = time.perf_counter()
        step()
        return (time.perf_counter() - t0) * 1e3, None
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end), (torch.cuda.max_memory_allocated() - before + own_bytes) / 2**30


def measure(args, head_dim: int, t: int, device: str, dtype) -> list[dict]:
    """The rows of one (head_dim, T), the floor first: median step ms, peak GiB (CUDA), and with --profile
    attention / all kernel ms; errors (an OOM, a refused shape) are recorded as results.

    Every model is built first and the steps are timed in turns, one step of each model per round (2 warm-up
    rounds, then --reps), so a drift in the host's speed during the run (4k-token steps are host-bound)
    falls on every row alike instead of on whichever ran at the slow moment."""
    ids = torch.randint(0, args.vocab, (1, t), generator=torch.Generator().manual_seed(t)).to(device)
    rows, steps = {}, {}
    for attn in (FLOOR, *args.attn):
        rows[attn] = {"head_dim": head_dim, "T": t, "attn": "floor" if attn == FLOOR else attn}
        try:
            model = build(args, attn, head_dim, device, dtype)
        except Exception as e:
            rows[attn]["error"] = _error(e)
            continue

        def step(model=model):
            model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
            model.zero_grad(set_to_none=True)

        steps[attn] = (step, sum(p.numel() * p.element_size() for p in model.parameters()))
    times, peaks = defaultdict(list), defaultdict(list)
    for round_ in range(2 + args.reps):
        for attn, (step, own_bytes) in list(steps.items()):
            try:
                ms, peak = _timed_step(step, device, own_bytes)
            except Exception as e:
                rows[attn]["error"] = _error(e)
                del steps[attn]
                continue
            if round_ >= 2:
                times[attn].append(ms)
                peaks[attn].append(peak)
    for attn, (step, _) in steps.items():
        rows[attn]["step_ms"] = statistics.median(times[attn])
        if device == "cuda":
            rows[attn]["peak_GiB"] = max(peaks[attn])
            if args.profile:
                kernels = profile_step(step, 1, True)
                rows[attn]["attention_kernel_ms"] = sum(ms for k, ms in kernels.items()
                                                        if any(m in k for m in ATTENTION_KERNEL_MARKERS))
                rows[attn]["total_kernel_ms"] = sum(kernels.values())
    steps = None
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return list(rows.values())


def ratios(rows: list[dict]) -> list[dict]:
    """Each row with `x_sdpa` (sdpa step / step), `attention_ms` (step - floor) and `attention_x_sdpa` (sdpa
    attention ms / attention ms), against the sdpa and floor rows of its (head_dim, T); None where undefined."""
    step = {(r["head_dim"], r["T"], r["attn"]): r.get("step_ms") for r in rows}
    kernels = {(r["head_dim"], r["T"], r["attn"]): r.get("attention_kernel_ms") for r in rows}
    out = []
    for r in rows:
        key, ms = (r["head_dim"], r["T"]), r.get("step_ms")
        sdpa, floor = step.get((*key, "sdpa")), step.get((*key, "floor"))
        attn = ms - floor if ms is not None and floor is not None and r["attn"] != "floor" else None
        sdpa_attn = sdpa - floor if sdpa is not None and floor is not None else None
        own, sdpa_kernels = r.get("attention_kernel_ms"), kernels.get((*key, "sdpa"))
        out.append({**r, "x_sdpa": sdpa / ms if sdpa and ms else None, "attention_ms": attn,
                    "attention_x_sdpa": sdpa_attn / attn if sdpa_attn and sdpa_attn > 0 and attn and attn > 0 else None,
                    "attention_kernels_x_sdpa": sdpa_kernels / own if sdpa_kernels and own else None})
    return out


def table(rows: list[dict]) -> str:
    """The markdown table of `ratios(rows)`; an error row shows its error in the step column. With --profile
    figures, two more columns: the attention kernels' time and its ratio to sdpa's."""
    fmt = lambda x, f="{:.2f}": "-" if x is None else f.format(x)  # noqa: E731
    profiled = any("attention_kernel_ms" in r for r in rows)
    extra = " attention kernels ms | kernels x sdpa |" if profiled else ""
    lines = ["| head_dim | T | attn | step ms | x sdpa | attention ms | attention x sdpa | peak GiB |" + extra,
             "|---|---|---|---|---|---|---|---|" + "---|---|" * profiled]
    for r in ratios(rows):
        ms = r["error"][:60] if "error" in r else fmt(r["step_ms"], "{:.1f}")
        line = (f"| {r['head_dim']} | {r['T']} | {r['attn']} | {ms} | {fmt(r['x_sdpa'])} | "
                f"{fmt(r['attention_ms'], '{:.1f}')} | {fmt(r['attention_x_sdpa'])} | {fmt(r.get('peak_GiB'))} |")
        if profiled:
            line += f" {fmt(r.get('attention_kernel_ms'), '{:.1f}')} | {fmt(r['attention_kernels_x_sdpa'])} |"
        lines.append(line)
    return "\n".join(lines)


def plot(rows: list[dict], env: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = list(dict.fromkeys(r["head_dim"] for r in rows))
    fig, axes = plt.subplots(1, len(dims), figsize=(5.5 * len(dims), 4), squeeze=False)
    for ax, d in zip(axes[0], dims):
        for attn in dict.fromkeys(r["attn"] for r in rows):
            pts = [(r["T"], r["step_ms"]) for r in rows if r["head_dim"] == d and r["attn"] == attn and "step_ms" in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=attn, linestyle="--" if attn == "floor" else "-")
        ax.set(xscale="log", yscale="log", xlabel="T (tokens)", ylabel="training step ms", title=f"head_dim {d}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Llama step (fwd + bwd), hidden {env['hidden']}, {env['layers']} layers, "
                 f"{env['dtype'].removeprefix('torch.')}, {env['device']}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (checks the script, not the speed)")
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=8192)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--gqa", type=int, default=4, help="query heads per key/value head")
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 32768])
    p.add_argument("--reps", type=int, default=9, help="timed rounds (one step of every model each)")
    p.add_argument("--attn", nargs="+", default=["sdpa", "holo", "performer", "gauge"])
    p.add_argument("--profile", action="store_true", help="CUDA: one profiled step per row, attention kernel ms")
    p.add_argument("--replot", metavar="MODEL_STEP_JSON", help="re-render the table and plot of a saved run; no timing")
    args = p.parse_args(argv)
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        return write_outputs([{k: v for k, v in r.items() if k in RAW_KEYS} for r in saved["rows"]], saved["env"],
                             Path(args.out))
    known = ["eager", "sdpa", *sorted(hf_attn.list_variants())]
    unknown = [a for a in args.attn if a not in known]
    if unknown:
        p.error(f"unknown --attn {unknown}; choose from {known}")
    if args.smoke:
        args.hidden, args.layers, args.intermediate, args.vocab, args.reps = 64, 2, 128, 128, 1
        args.head_dims, args.lengths = [16, 32], [64, 128]
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    grid = [(d, t) for d in args.head_dims for t in args.lengths]
    rows = [row for d, t in tqdm(grid, desc="(head_dim, T)") for row in measure(args, d, t, device, dtype)]
    env = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
           "transformers": transformers.__version__, "dtype": str(dtype), "batch": 1,
           **{k: getattr(args, k) for k in ("hidden", "layers", "intermediate", "vocab", "gqa", "reps", "attn")}}
    write_outputs(rows, env, Path(args.out))


def write_outputs(rows: list[dict], env: dict, out: Path) -> None:
    """model_step.json (rows with their ratios), model_step.md (the table, also printed) and model_step.png."""
    write_text_atomic(out / "model_step.json", json.dumps({"env": env, "rows": ratios(rows)}, indent=1))
    md = table(rows)
    write_text_atomic(out / "model_step.md", md + "\n")
    plot(rows, env, out / "model_step.png")
    print(md)


if __name__ == "__main__":
    main()
