"""recipes/bench/bench_launch.py on CPU (Triton interpreter, tiny): a row per kernel, and the direct path is left on."""
import json

import pytest
from recipe_runs import load_script

pytest.importorskip("triton")


def test_smoke_run_writes_a_row_per_kernel_and_restores_the_direct_path(tmp_path):
    from hf_attn.kernels import launch

    load_script("bench/bench_launch.py").main(["--smoke", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "launch.json").read_text())["rows"]
    assert [r["kernel"] for r in rows] == ["holo", "performer", "gauge"]
    assert all(r["direct_ms"] > 0 and r["triton_ms"] > 0 for r in rows)
    assert launch.DIRECT is True and "| holo | 16 |" in (tmp_path / "launch.md").read_text()
