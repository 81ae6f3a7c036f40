"""recipes/bench/tune_scan.py on CPU (Triton interpreter, tiny shape): every setting runs and the chosen one is marked."""
import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("triton")
SCRIPT = Path(__file__).resolve().parents[3] / "recipes" / "bench" / "tune_scan.py"


def test_smoke_run_times_each_setting_and_marks_the_chosen_one(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # as when run as a script: it imports bench_kernels
    spec = importlib.util.spec_from_file_location("tune_scan", SCRIPT)
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    tune.main(["--smoke", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "scan.json").read_text())["results"]["tiny"]
    assert len(rows) > 10 and all(r["ms"] > 0 for r in rows)
    assert [r["ms"] for r in rows] == sorted(r["ms"] for r in rows)
    assert sum(r["chosen"] for r in rows) == 1
