"""`hf-attn report RUNS... --out DIR`: report.md with plots and the GO/NO-GO verdict per variant."""
from __future__ import annotations

import shlex
import sys


def run(args) -> int:
    from hf_attn.harness.report import build_report

    report = build_report(args.runs, args.out, command="hf-attn report " + " ".join(map(shlex.quote, sys.argv[2:])))
    print(f"wrote {report}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="one report.md with plots and GO/NO-GO verdicts from run folders")
    p.add_argument("runs", nargs="+", help="run folders, or folders that contain them (sweeps)")
    p.add_argument("--out", default="report", help="folder for report.md and its figures (default: report/)")
    p.set_defaults(func=run)
