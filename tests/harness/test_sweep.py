"""Sweeps: grid expansion and validation, subprocess runs, sweep.csv, skipping finished runs."""
import csv
from pathlib import Path

import pytest

from hf_attn import HfAttnError
from hf_attn.harness.sweep import load_sweep, run_sweep

REPO = Path(__file__).resolve().parents[2]


def test_shipped_sweeps_expand_and_validate():
    spec, points = load_sweep(REPO / "recipes/sweeps/seq_attention.yaml")
    assert len(points) == 9 and {p.recipe["data"]["seq_len"] for p in points} == {512, 1024, 2048}
    assert {p.recipe["model"]["attention"] for p in points} == {"sdpa", "holo", "performer"}
    assert all(p.recipe["train"]["steps"] == 200 for p in points)


def test_bad_sweeps(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text(f"base: {REPO}/recipes/train/copy_sdpa.yaml\ngrid: {{data.seq_len: 5}}\n")
    with pytest.raises(HfAttnError, match="non-empty list"):
        load_sweep(bad)
    bad.write_text(f"base: {REPO}/recipes/train/copy_sdpa.yaml\ngrid: {{optim.schedule: [cosine, step]}}\n")
    with pytest.raises(HfAttnError, match="optim.schedule"):
        load_sweep(bad)
    bad.write_text(f"base: {REPO}/recipes/train/copy_sdpa.yaml\ngrid: {{model.attention: [sdpa, hollo]}}\n")
    with pytest.raises(HfAttnError, match="Did you mean 'holo'"):
        load_sweep(bad)


def test_sweep_runs_records_failures_and_skips_finished(tmp_path):
    sweep = tmp_path / "s.yaml"
    text = (f"base: {REPO}/recipes/train/copy_sdpa.yaml\nout_dir: {tmp_path}/out\ngrid: {{model.attention: [sdpa]}}\n"
            "set: {train.steps: 1, data.seq_len: 9, data.batch_size: 2, data.eval_batches: 1, model.hidden_size: 16,"
            " model.num_layers: 1, model.num_heads: 2}\n")
    sweep.write_text(text + "launcher: [sh, -c, 'exit 3', x]\n")  # a launcher that fails: recorded, sweep goes on
    rows = list(csv.DictReader(run_sweep(sweep).open()))
    assert rows[0]["status"].startswith("failed (exit 3")
    sweep.write_text(text)
    rows = list(csv.DictReader(run_sweep(sweep).open()))
    assert rows[0]["model.attention"] == "sdpa" and rows[0]["status"] == "done" and float(rows[0]["eval_loss"]) > 0
    again = list(csv.DictReader(run_sweep(sweep).open()))
    assert again[0]["status"] == "done (skipped)" and again[0]["eval_loss"] == rows[0]["eval_loss"]
