"""`hf-attn sweep recipes/sweeps/X.yaml`: run every grid point of a sweep and collect sweep.csv."""
from __future__ import annotations


def run(args) -> int:
    from hf_attn.harness.sweep import run_sweep

    table = run_sweep(args.sweep, dry_run=args.dry_run)
    print(table.read_text())
    print(f"wrote {table}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of training runs (seq_len x rank x ...) and collect their metrics")
    p.add_argument("sweep", help="sweep YAML, e.g. recipes/sweeps/seq_rank_tt.yaml")
    p.add_argument("--dry-run", action="store_true", help="validate every grid point and print the commands only")
    p.set_defaults(func=run)
