"""`hf-attn` console script. Each subcommand lives in its own module exposing `register(subparsers)`."""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add a subcommand; each defines `register(subparsers)` which sets `func` on its parser.
COMMAND_MODULES = [
    "hf_attn.commands.variants",
    "hf_attn.commands.compare",
    "hf_attn.commands.push",
    "hf_attn.commands.sweep",
    "hf_attn.commands.prune",
    "hf_attn.commands.report",
    "hf_attn.commands.tt_sweep",
    "hf_attn.commands.probe",
    "hf_attn.commands.convert",
]


def build_parser() -> argparse.ArgumentParser:
    """The `hf-attn` parser with one subcommand per module of `hf_attn.commands`."""
    parser = argparse.ArgumentParser(
        prog="hf-attn",
        description="Swap attention in pretrained HuggingFace models and measure what it costs and gains.",
        epilog="Run `hf-attn COMMAND --help` for the options of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `hf-attn ARGV`; returns the exit code (hf-attn errors are printed as one line, not a traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .utils import HfAttnError, MissingDependencyError

    try:
        return int(args.func(args) or 0)
    except (HfAttnError, MissingDependencyError) as e:
        print(f"hf-attn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
