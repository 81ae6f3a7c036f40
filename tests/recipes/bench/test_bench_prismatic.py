"""recipes/bench/bench_prismatic.py runs end to end on CPU (--smoke) and writes its JSON."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "recipes" / "bench"))

import bench_prismatic  # noqa: E402


def test_bench_smoke(tmp_path):
    rows = bench_prismatic.main(["--smoke", "--cases", "base,v2-mlp,v3-alibi", "--out", str(tmp_path)])
    assert [r["case"] for r in rows] == ["base", "v2-mlp", "v3-alibi"] and rows[0]["ratio"] == 1.0
    saved = json.loads((tmp_path / "bench_prismatic.json").read_text())
    assert all(r["step_s"] > 0 for r in saved["rows"]) and saved["meta"]["smoke"]
