"""`hf-attn tt-sweep`: perplexity vs parameter ratio of TT-SVD compressed projections over a rank sweep."""
from __future__ import annotations

from pathlib import Path


def run(args) -> int:
    from tqdm import tqdm

    import torch

    from .. import assets
    from ..harness.tt_sweep import run_sweep
    from ..utils import HfAttnError

    try:
        ranks = [int(r) for r in args.ranks.split(",")]
    except ValueError:
        raise HfAttnError(f"--ranks takes comma-separated integers, e.g. 4,8,16; got {args.ranks!r}.") from None
    torch.set_num_threads(args.threads)
    if args.model_path:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(args.model_path, attn_implementation="sdpa", dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(args.model_path)
        label = Path(args.model_path).name
    else:
        model, tokenizer = assets.load_smollm2("sdpa")
        label = "SmolLM2-135M-Instruct"
    windows = assets.token_windows(tokenizer, assets.wiki_text("test"), args.windows, args.window)
    targets = args.target_modules.split(",") if args.target_modules else None
    rows = run_sweep(model.to(args.device), windows, ranks, args.out, args.num_cores, targets, label, tqdm)
    print(f"corpus: {assets.CORPUS_NAME}, test split, {args.windows} x {args.window} tokens")
    print(f"{'rank':>5} {'params':>8} {'rel err':>8} {'ppl':>10} (dense ppl {rows[0]['dense_perplexity']:.3f})")
    for r in rows:
        print(f"{r['rank']:>5} {r['wrapped_param_ratio']:>8.3f} {r['mean_rel_error']:>8.3f} {r['perplexity']:>10.3f}")
    print(f"wrote {Path(args.out) / 'tt_sweep.csv'}, tt_sweep.png, tt_report.json")
    return 0


def register(sub) -> None:
    p = sub.add_parser("tt-sweep", help="perplexity vs parameter ratio of TT-SVD compressed projections")
    p.add_argument("--ranks", default="4,8,16,32,64", help="comma-separated TT ranks (default 4,8,16,32,64)")
    p.add_argument("--num-cores", type=int, default=3, help="cores per TT-matrix (default 3)")
    p.add_argument("--target-modules", default=None, help="comma-separated name suffixes (default: attention q/k/v/o)")
    p.add_argument("--windows", type=int, default=2, help="number of held-out token windows (default 2)")
    p.add_argument("--window", type=int, default=256, help="tokens per window (default 256)")
    p.add_argument("--model-path", default=None, help="a from_pretrained folder (default: the offline SmolLM2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--out", default="results/tt_sweep", help="output folder (default results/tt_sweep)")
    p.set_defaults(func=run)
