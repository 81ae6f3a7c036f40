"""`hf-attn tt-sweep` core: a rank sweep on a tiny model writes CSV, PNG and the per-module JSON report."""
import csv
import json

import pytest

import hf_attn
from hf_attn.cli import build_parser
from hf_attn.evaluate import perplexity
from hf_attn.harness.tt_sweep import run_sweep
from harness import ids, tiny_model


def test_sweep_writes_csv_plot_report_and_restores_the_model(tmp_path):
    model = tiny_model("llama", "sdpa")
    windows = ids(2, 16)
    dense = perplexity(model, windows)
    rows = run_sweep(model, windows, [1, 4, 1000], tmp_path, label="tiny")
    assert [r["rank"] for r in rows] == [1, 4, 1000]
    ratios = [r["wrapped_param_ratio"] for r in rows]
    errors = [r["mean_rel_error"] for r in rows]
    assert ratios == sorted(ratios) and errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-5 and abs(rows[-1]["perplexity"] - dense) < 1e-3 * dense  # full rank = dense
    assert rows[0]["perplexity"] != pytest.approx(dense, rel=1e-3)
    with open(tmp_path / "tt_sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["rank"]) for r in table] == [1, 4, 1000]
    report = json.loads((tmp_path / "tt_report.json").read_text())
    assert len(report["ranks"]["4"]["modules"]) == 8  # 2 layers x q/k/v/o
    assert (tmp_path / "tt_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert getattr(model, "hf_attn_wrapper", None) is None and perplexity(model, windows) == pytest.approx(dense)


def test_cli_parses_and_rejects_bad_ranks():
    args = build_parser().parse_args(["tt-sweep", "--ranks", "4,x"])
    with pytest.raises(hf_attn.HfAttnError, match="--ranks"):
        args.func(args)
