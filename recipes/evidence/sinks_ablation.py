"""What a sliding softmax window loses without its attention sinks: SmolLM2-135M held-out perplexity with full
attention, a W-token window alone, and the window plus the first S tokens (Xiao et al. 2024, "Efficient
Streaming Language Models with Attention Sinks").

The window models are hf-attn window hybrids with the variant's share set to 0 (`hf_attn.set_window(model, W,
mix=0.0, sinks=S)`): exact softmax over the window and the sinks, nothing else. No training.

    python recipes/evidence/sinks_ablation.py --out results/sinks        # CPU: ~1 min for 16 x 512 tokens
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import hf_attn
from hf_attn.assets import load_smollm2, token_windows, wiki_text
from hf_attn.evaluate import perplexity
from hf_attn.utils import write_text_atomic


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Perplexity per setting, also written to `--out`/sinks.json and sinks.md."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--sinks", type=int, default=4)
    p.add_argument("--windows", type=int, default=16, help="held-out windows of --seq-len tokens")
    p.add_argument("--seq-len", type=int, default=512)
    args = p.parse_args(argv)
    model, tokenizer = load_smollm2("sdpa")
    data = token_windows(tokenizer, wiki_text("test"), args.windows, args.seq_len)
    rows = {"full attention (sdpa)": perplexity(model, data, 4)}
    hf_attn.set_attention(model, "performer")  # share 0: the variant never contributes
    for sinks in (0, args.sinks):
        hf_attn.set_window(model, args.window, mix=0.0, sinks=sinks)
        rows[f"window {args.window}" + (f" + {sinks} sinks" if sinks else " alone")] = perplexity(model, data, 4)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sinks.json", json.dumps({"settings": vars(args), "perplexity": rows}, indent=2) + "\n")
    table = [f"SmolLM2-135M, {args.windows} x {args.seq_len} held-out tokens (Wikipedia summaries, test split)", "",
             "| attention | perplexity |", "|---|---|", *(f"| {k} | {v:.2f} |" for k, v in rows.items())]
    write_text_atomic(out / "sinks.md", "\n".join(table) + "\n")
    print("\n".join(table))
    return rows


if __name__ == "__main__":
    main()
