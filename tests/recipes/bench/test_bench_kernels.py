"""recipes/bench/bench_kernels.py: the smoke run on CPU, and re-rendering a saved GPU run's table and plot."""
import json

import pytest
from recipe_runs import load_script


def load():
    return load_script("bench/bench_kernels.py")


def test_smoke_run_times_the_pytorch_paths_against_sdpa(tmp_path):
    load().main(["--smoke", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "kernels.json").read_text())["rows"]
    assert {r["name"] for r in rows} == {"holo_torch", "performer_torch", "sdpa"}
    assert all(r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 for r in rows)
    assert (tmp_path / "kernels.png").stat().st_size > 0 and "| sdpa |" in (tmp_path / "kernels.md").read_text()


def test_methods_picks_rows_and_names_unknown_ones(tmp_path, capsys):
    bench = load()
    bench.main(["--smoke", "--methods", "sdpa", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "kernels.json").read_text())["rows"]
    assert {r["name"] for r in rows} == {"sdpa"}
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--smoke", "--methods", "flash3", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "unknown --methods ['flash3']" in capsys.readouterr().err


def test_replot_renders_event_and_graph_tables_from_a_saved_run(tmp_path):
    rows = [{"name": n, "T": t, "fwd_ms": ms, "fwdbwd_ms": 3 * ms, "fwd_graph_ms": ms / 4, "fwdbwd_graph_ms": ms,
             "fwdbwd_peak_MiB": t / 64} for n, ms in (("sdpa_cudnn", 2.0), ("holo", 1.0)) for t in (1024, 4096)]
    env = {"device": "NVIDIA H100", "torch": "2.11", "dtype": "torch.bfloat16", "heads": 16, "head_dim": 64}
    saved = tmp_path / "kernels.json"
    saved.write_text(json.dumps({"env": env, "rows": rows}))
    load().main(["--replot", str(saved), "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "kernels.md").read_text()
    assert "CUDA-graph replays" in md and "| holo | 1.000 / 3.000 (x2.00), 16 |" in md  # events: 6 ms / 3 ms
    assert "| holo | 0.250 / 1.000 (x2.00), 16 |" in md  # graphs: 2 ms / 1 ms
    assert (tmp_path / "out" / "kernels.png").stat().st_size > 0
