"""`python -m hf_attn.train --config recipes/train/X.yaml` or `accelerate launch [...] -m hf_attn.train --config ...`."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m hf_attn.train`: recipe, overrides, run folder, resume."""
    p = argparse.ArgumentParser(prog="python -m hf_attn.train", description="Train a recipe (see docs/training.md).")
    p.add_argument("--config", required=True, help="recipe YAML, e.g. recipes/train/charlm_holo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set data.seq_len=512 --set model.wrapper.rank=16 (repeatable)")
    p.add_argument("--out_dir", help="run folder (default: the recipe's out_dir, else runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    return p


def main(argv: list[str] | None = None) -> int:
    """Train one recipe; returns the exit code (hf-attn errors are printed as one line)."""
    args = build_parser().parse_args(argv)
    from .. import adapters, registry  # noqa: F401  (registers the variants and wrappers)
    from ..utils import HfAttnError, MissingDependencyError
    from .config import TrainConfig
    from .loop import train

    try:
        overrides = list(args.overrides) + ([f"out_dir={args.out_dir}"] if args.out_dir else [])
        train(TrainConfig.from_yaml(args.config, overrides), resume=args.resume)
    except (HfAttnError, MissingDependencyError) as e:
        print(f"hf_attn.train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
