"""How far stage 1 of `hf-attn convert` (attention transfer) moves each variant at each learning rate:
SmolLM2-135M held-out perplexity right after the swap, and after `--steps` transfer steps (no window, no LoRA).

Each run is the transfer stage `hf-attn convert` itself would run (`stage_recipes(...)["transfer"]`, the trainer,
its warmup and cosine schedule), at a toy size so the CPU can sweep it.

    python recipes/evidence/transfer_lr.py --out results/transfer_lr     # CPU: ~8 min (3 variants x 2 rates)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoTokenizer

from hf_attn.assets import token_windows, wiki_text
from hf_attn.evaluate import perplexity
from hf_attn.harness.convert import ConvertSettings, load_model, run_stage, stage_recipes, training_device
from hf_attn.train.models import resolve_model_path
from hf_attn.train.rundir import MetricsCsv
from hf_attn.utils import write_text_atomic

CPU = torch.device("cpu")


def transfer_row(settings: ConvertSettings, data: torch.Tensor) -> dict[str, float]:
    """Train stage 1 as `hf-attn convert` would; its first and last summed layer MSE and the perplexity after."""
    with training_device(CPU):
        run = run_stage(stage_recipes(settings)["transfer"])
    losses = [r["loss"] for r in MetricsCsv.load(run / "metrics.csv") if r.get("loss") is not None]
    ppl = perplexity(load_model(run / "final", CPU), data, 2)
    return {"first_loss": losses[0], "last_loss": losses[-1], "ppl": ppl}


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """`{variant: {"swap": {"ppl"}, "lr X": {first_loss, last_loss, ppl}}}`, also in `--out`/transfer_lr.json/.md."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--variants", nargs="+", default=["performer", "holo", "gauge"])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-2])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--windows", type=int, default=4, help="held-out windows of --seq-len tokens")
    args = p.parse_args(argv)
    out = Path(args.out)
    data = token_windows(AutoTokenizer.from_pretrained(resolve_model_path("smollm2")), wiki_text("test"), args.windows, args.seq_len)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for variant in args.variants:
        torch.manual_seed(0)
        rows[variant] = {"swap": {"ppl": perplexity(load_model("smollm2", CPU, variant), data, 2)}}
        for lr in args.lrs:
            settings = ConvertSettings(to=variant, transfer_steps=args.steps, seq_len=args.seq_len,
                                       batch_size=args.batch_size, lr=lr, device="cpu",
                                       out=str(out / "runs" / f"{variant}_lr{lr:g}"))
            rows[variant][f"lr {lr:g}"] = transfer_row(settings, data)
    write_text_atomic(out / "transfer_lr.json", json.dumps({"settings": vars(args), "rows": rows}, indent=2) + "\n")
    table = [f"SmolLM2-135M, stage 1 only: {args.steps} steps of {args.batch_size} x {args.seq_len} tokens; perplexity "
             f"on {args.windows} x {args.seq_len} held-out tokens (Wikipedia summaries, test split)", "",
             "| variant | after the swap | " + " | ".join(f"lr {lr:g}: loss first -> last, ppl" for lr in args.lrs) + " |",
             "|---|---|" + "---|" * len(args.lrs)]
    for variant, r in rows.items():
        cells = [f"{r[f'lr {lr:g}']['first_loss']:.3g} -> {r[f'lr {lr:g}']['last_loss']:.3g}, {r[f'lr {lr:g}']['ppl']:.4g}"
                 for lr in args.lrs]
        table.append(f"| {variant} | {r['swap']['ppl']:.4g} | " + " | ".join(cells) + " |")
    write_text_atomic(out / "transfer_lr.md", "\n".join(table) + "\n")
    print("\n".join(table))
    return rows


if __name__ == "__main__":
    main()
