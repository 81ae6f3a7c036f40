"""`hf-attn prune RUN`: silence the k lowest/highest-entropy heads of a trained run and re-evaluate."""
from __future__ import annotations


def run(args) -> int:
    from hf_attn.harness.prune import prune_run

    counts = [int(c) for c in args.counts.split(",")] if args.counts else None
    prune_run(args.run, counts=counts, orders=tuple(args.orders.split(",")), kind=args.entropy)
    print((__import__("pathlib").Path(args.run) / "pruning.md").read_text())
    return 0


def register(sub) -> None:
    p = sub.add_parser("prune", help="entropy-ranked head pruning of a trained run: quality vs heads pruned")
    p.add_argument("run", help="run folder written by hf_attn.train")
    p.add_argument("--counts", help="comma-separated numbers of heads to prune (default: 0 to 75%% in eighths)")
    p.add_argument("--orders", default="low,high,random", help="which heads go first: low, high, random (control)")
    p.add_argument("--entropy", default="entanglement", choices=["entanglement", "attention"],
                   help="which logged per-head entropy ranks the heads")
    p.set_defaults(func=run)
