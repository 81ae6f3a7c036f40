"""recipes/bench_tt.py --smoke: the GPU benchmark script runs end to end on CPU and writes its JSON."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "bench_tt.py"


def test_smoke_run_writes_rows_for_dense_and_each_rank(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_tt", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke", "--ranks", "2,4", "--dtype", "float32", "--device", "cpu", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench_tt.json").read_text())
    assert [r["config"] for r in data["rows"]] == ["dense", "tt r=2", "tt r=4"]
    dense, r2, r4 = data["rows"]
    assert dense["attn_param_ratio"] == 1.0 and 0 < r2["attn_params"] < r4["attn_params"] < dense["attn_params"]
    assert all(r["step_ms"] > 0 and r["loss"] == r["loss"] for r in data["rows"])
    assert [p["config"] for p in data["projection"]] == ["dense", "tt r=2", "tt r=4"]
    assert "target at rank 16" not in capsys.readouterr().out  # no rank 16 in this run
