"""The main job: one pretrained model, several attention implementations, one table.

`hf-attn compare` (hf_attn/commands/compare.py) loads the model once (SmolLM2-135M by default), switches its attention with
`set_attn_implementation`, and for each implementation measures perplexity on held-out text, forward
tokens/s and peak memory. It writes `results.json`, `results.csv`, `compare.png` and `summary.md`.

The variants replace softmax attention in a model that was *trained* with softmax attention, with no
fine-tuning: their perplexity measures how far the swap moves the model, not what the variant can
reach after recovery training (see the training recipes).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..evaluate import token_loss
from ..measure import PeakMemory, sync
from ..utils import HfAttnError, atomic_path, write_text_atomic

DEFAULT_IMPLS = ("sdpa", "eager", "holo", "performer")


@dataclass
class Row:
    """One implementation's result in `hf-attn compare`: perplexity, throughput and peak memory."""

    implementation: str
    perplexity: float
    tokens_per_s: float
    peak_mib: float
    tokens: int


def default_implementations(device: torch.device) -> list[str]:
    """The implementations compared by default; `flash_attention_2` joins on CUDA when it is installed."""
    impls = list(DEFAULT_IMPLS)
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        impls.insert(1, "flash_attention_2")
    return impls


@torch.no_grad()
def evaluate(model, windows: torch.Tensor, batch_size: int, device: torch.device, desc: str) -> Row:
    """Token-weighted perplexity over `windows (N, T)`, forward throughput and peak memory."""
    nll, count, seconds = 0.0, 0, 0.0
    model(input_ids=windows[:1, :64].to(device))  # warm-up: first-call allocations and kernel selection
    with PeakMemory(device) as pm:
        for i in tqdm(range(0, len(windows), batch_size), desc=desc, leave=False):
            x = windows[i : i + batch_size].to(device)
            sync(device)
            start = time.perf_counter()
            nll_n = token_loss(model, x)
            sync(device)
            seconds += time.perf_counter() - start
            nll += nll_n[0].item()
            count += int(nll_n[1].item())
    impl = model.config._attn_implementation
    return Row(impl, math.exp(nll / count), windows.numel() / seconds, pm.mib, windows.numel())


def explain(rows: list[Row]) -> str:
    """What the numbers mean, in words, relative to the `sdpa` row."""
    base = next((r for r in rows if r.implementation == "sdpa"), rows[0])
    lines = [
        f"Perplexity is on held-out text; `{base.implementation}` is the model as trained (softmax attention).",
        "eager/sdpa/flash_attention_2 compute the same softmax attention, so their perplexities should agree; "
        "they differ only in speed and memory.",
    ]
    for r in rows:
        if r.implementation in ("sdpa", "eager", "flash_attention_2"):
            continue
        lines.append(
            f"{r.implementation}: perplexity {r.perplexity:,.1f} vs {base.perplexity:,.1f} "
            f"({r.perplexity / base.perplexity:,.1f}x). The model's weights were trained for softmax attention, so a "
            "swapped-in variant loses quality until it is fine-tuned (recovery recipes: docs/training.md); this row "
            "is the starting point of that recovery, not the variant's ceiling."
        )
    return "\n".join(lines)


def format_table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table, as printed by `hf-attn compare`."""
    head = f"{'implementation':<20}{'perplexity':>14}{'tokens/s':>12}{'peak MiB':>11}"
    body = [f"{r.implementation:<20}{r.perplexity:>14,.2f}{r.tokens_per_s:>12,.0f}{r.peak_mib:>11,.0f}" for r in rows]
    return "\n".join([head, "-" * len(head), *body])


def markdown_table(rows: list[Row]) -> str:
    """The results as a markdown table (numbers right-aligned)."""
    lines = ["| implementation | perplexity | tokens/s | peak MiB |", "|---|---:|---:|---:|"]
    lines += [f"| `{r.implementation}` | {r.perplexity:,.2f} | {r.tokens_per_s:,.0f} | {r.peak_mib:,.0f} |" for r in rows]
    return "\n".join(lines)


def memory_meaning(device: str) -> str:
    """What the peak-memory column measures on `device` (see hf_attn.measure.PeakMemory)."""
    if device.startswith("cuda"):
        return "CUDA allocator peak above the level before the evaluation (weights excluded)."
    return ("growth of the process's resident memory above the level before the evaluation, sampled every 2 ms "
            "(torch keeps no CPU peak statistics): a rough figure that allocator caching and other threads move.")


def summary_markdown(rows: list[Row], meta: dict) -> str:
    """summary.md: a title, the settings in words, the table, and what each column and row means."""
    notes = "\n".join(f"- {line}" for line in explain(rows).splitlines())
    return "\n".join([
        f"# hf-attn compare: {meta['model']}",
        "",
        f"{meta['model']} evaluated with each attention implementation on {meta['corpus']}: {meta['windows']} "
        f"tokens ({meta['tokens']:,} in all), on {meta['device']} in {meta['dtype']} (torch {meta['torch']}).",
        "",
        markdown_table(rows),
        "",
        "## What the numbers mean",
        "",
        "- **perplexity**: exp of the mean next-token cross-entropy on the held-out windows; lower is better, "
        "and a uniform guess over the vocabulary scores the vocabulary size.",
        "- **tokens/s**: forward-pass throughput (tokens evaluated per second of model time, no backward pass).",
        f"- **peak MiB**: {memory_meaning(meta['device'])}",
        notes,
        "",
        "Files next to this one: `results.json` (these rows and the settings), `results.csv`, `compare.png`.",
        "",
    ])


def plot(rows: list[Row], path: Path, title: str) -> None:
    """Perplexity, tokens/s and peak memory per implementation as three bar charts in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.implementation for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, label in zip(
        axes, ("perplexity", "tokens_per_s", "peak_mib"), ("perplexity (log)", "forward tokens/s", "peak MiB")
    ):
        ax.bar(names, [getattr(r, key) for r in rows], color="tab:blue")
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=30)
        if key == "perplexity":
            ax.set_yscale("log")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_results(rows: list[Row], out: Path, meta: dict) -> None:
    """Write `results.json`, `results.csv` and `summary.md` to `out`, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2))
    with atomic_path(out / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        w.writeheader()
        w.writerows(asdict(r) for r in rows)
    write_text_atomic(out / "summary.md", summary_markdown(rows, meta))
    plot(rows, out / "compare.png", f"{meta['model']} on {meta['corpus']}, {meta['tokens']} tokens, {meta['device']}")


def load_model(name_or_path: str, device: torch.device, dtype: torch.dtype):
    """`(model, tokenizer, name)` from `smollm2` (the bundled copy) or a local save_pretrained folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path == "smollm2":
        from ..assets import smollm2_path

        name_or_path = str(smollm2_path())
    path = Path(name_or_path)
    if not path.exists():
        raise HfAttnError(
            f"Model '{name_or_path}' is neither 'smollm2' nor a local folder. The Hub is not reachable here: "
            "pass a folder written by save_pretrained."
        )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path), path.name
