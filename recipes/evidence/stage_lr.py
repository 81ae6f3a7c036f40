"""How far each stage of `hf-attn convert` moves a variant at each learning rate, on SmolLM2-135M without a window:
held-out perplexity right after the swap, after stage 1 (attention transfer) at each `--lrs` rate, and after
stage 2 (LoRA distillation) at each `--recover-lrs` rate, started from stage 1 at the last `--lrs` rate.

Each run is the stage `hf-attn convert` itself would run (`stage_recipes(...)`, the trainer, its warmup and cosine
schedule), at a toy size so the CPU can sweep it.

    python recipes/evidence/stage_lr.py --out results/stage_lr                  # stage 1 only; CPU: ~8 min
    python recipes/evidence/stage_lr.py --out results/stage_lr --variants performer holo --recover-lrs 1e-4 1e-3
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


def stage_row(recipe: dict, data: torch.Tensor) -> dict[str, float]:
    """Train one stage as `hf-attn convert` would; its first and last logged loss and the perplexity after."""
    with training_device(CPU):
        run = run_stage(recipe)
    losses = [r["loss"] for r in MetricsCsv.load(run / "metrics.csv") if r.get("loss") is not None]
    ppl = perplexity(load_model(run / "final", CPU), data, 2)
    return {"first_loss": losses[0], "last_loss": losses[-1], "ppl": ppl}


def variant_rows(variant: str, args: argparse.Namespace, data: torch.Tensor) -> dict[str, dict[str, float]]:
    """`{"swap": {ppl}, "lr X": stage-1 row, ..., "recover lr Y": stage-2 row, ...}` for one variant."""
    def settings(lr: float, recover_lr: float = ConvertSettings.recover_lr) -> ConvertSettings:
        return ConvertSettings(to=variant, transfer_steps=args.steps, recover_steps=args.recover_steps,
                               seq_len=args.seq_len, batch_size=args.batch_size, lr=lr, recover_lr=recover_lr,
                               device="cpu", out=str(Path(args.out) / "runs" / f"{variant}_lr{lr:g}"))

    torch.manual_seed(0)
    rows = {"swap": {"ppl": perplexity(load_model("smollm2", CPU, variant), data, 2)}}
    for lr in args.lrs:
        rows[f"lr {lr:g}"] = stage_row(stage_recipes(settings(lr))["transfer"], data)
    for recover_lr in args.recover_lrs:  # from stage 1 at the last rate, one run folder per stage-2 rate
        recipe = stage_recipes(settings(args.lrs[-1], recover_lr))["recover"]
        recipe["out_dir"] = str(Path(recipe["out_dir"]).with_name(f"recover_lr{recover_lr:g}"))
        rows[f"recover lr {recover_lr:g}"] = stage_row(recipe, data)
    return rows


def table(rows: dict, args: argparse.Namespace) -> list[str]:
    """The markdown table: one row per variant, one column per stage and rate."""
    keys = [f"lr {lr:g}" for lr in args.lrs] + [f"recover lr {lr:g}" for lr in args.recover_lrs]
    heads = [f"stage 1 lr {lr:g}" for lr in args.lrs] + [f"stage 2 lr {lr:g}" for lr in args.recover_lrs]
    lines = [f"SmolLM2-135M, no window; stage 1: {args.steps} steps, stage 2: {args.recover_steps} steps (from stage 1 "
             f"at lr {args.lrs[-1]:g}), each of {args.batch_size} x {args.seq_len} tokens; perplexity on "
             f"{args.windows} x {args.seq_len} held-out tokens (Wikipedia summaries, test split); cells: logged loss "
             "first -> last, perplexity after", "",
             "| variant | after the swap | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(keys)]
    for variant, r in rows.items():
        cells = [f"{r[k]['first_loss']:.3g} -> {r[k]['last_loss']:.3g}, {r[k]['ppl']:.4g}" for k in keys]
        lines.append(f"| {variant} | {r['swap']['ppl']:.4g} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Rows per variant (see `variant_rows`), also written to `--out`/stage_lr.json and stage_lr.md."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--variants", nargs="+", default=["performer", "holo", "gauge"])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-2], help="stage 1 rates")
    p.add_argument("--recover-lrs", type=float, nargs="*", default=[], help="stage 2 rates (none: skip stage 2)")
    p.add_argument("--steps", type=int, default=30, help="stage 1 steps")
    p.add_argument("--recover-steps", type=int, default=30, help="stage 2 steps")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--windows", type=int, default=4, help="held-out windows of --seq-len tokens")
    args = p.parse_args(argv)
    data = token_windows(AutoTokenizer.from_pretrained(resolve_model_path("smollm2")), wiki_text("test"),
                         args.windows, args.seq_len)
    rows = {variant: variant_rows(variant, args, data) for variant in args.variants}
    out = Path(args.out)
    write_text_atomic(out / "stage_lr.json", json.dumps({"settings": vars(args), "rows": rows}, indent=2) + "\n")
    lines = table(rows, args)
    write_text_atomic(out / "stage_lr.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
