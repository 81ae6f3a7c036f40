"""recipes/bench/bench_tt.py --smoke: the GPU benchmark script runs end to end on CPU and writes its JSON."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "recipes" / "bench" / "bench_tt.py"


def test_smoke_run_writes_rows_for_dense_and_each_rank(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_tt", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--smoke", "--ranks", "2,4", "--contractions", "cores,dense", "--dtype", "float32", "--device", "cpu"]
    assert bench.main([*args, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench_tt.json").read_text())
    assert [r["config"] for r in data["rows"]] == ["dense", "tt r=2 cores", "tt r=2 dense", "tt r=4 cores", "tt r=4 dense"]
    dense, r2, r2d, r4, _ = data["rows"]
    assert dense["attn_param_ratio"] == 1.0 and 0 < r2["attn_params"] < r4["attn_params"] < dense["attn_params"]
    assert r2d["attn_params"] == r2["attn_params"] and r2d["loss"] == r2d["loss"]
    assert all(r["step_ms"] > 0 and r["loss"] == r["loss"] for r in data["rows"])
    projection = {(p["rows"], p["config"]) for p in data["projection"]}
    assert {(128, "dense"), (128, "tt r=16 cores"), (128, "tt r=16 dense")} <= projection
    assert "target at rank 16" not in capsys.readouterr().out  # no rank 16 in this run
