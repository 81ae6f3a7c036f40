"""recipes/bench/bench_model.py: the CPU smoke run, the ratio/table logic on given numbers, unknown attention names."""
import json

import pytest
from recipe_runs import load_script


@pytest.fixture
def bench():
    return load_script("bench/bench_model.py")  # it imports bench_kernels and profile_kernels beside it


def test_smoke_run_writes_a_row_per_head_dim_length_and_attention_plus_floors(bench, tmp_path):
    bench.main(["--smoke", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "model_step.json").read_text())["rows"]
    attns = ["floor", "sdpa", "holo", "performer", "gauge"]
    assert [(r["head_dim"], r["T"], r["attn"]) for r in rows] == [
        (d, t, a) for d in (16, 32) for t in (64, 128) for a in attns]
    assert all("error" not in r and r["step_ms"] > 0 for r in rows)
    assert all(r["x_sdpa"] == 1.0 for r in rows if r["attn"] == "sdpa")
    assert "| 32 | 128 | performer |" in (tmp_path / "model_step.md").read_text()
    assert (tmp_path / "model_step.png").stat().st_size > 0


def test_ratios_and_table_from_given_numbers_with_an_error_row(bench):
    rows = [{"head_dim": 64, "T": 4096, "attn": "floor", "step_ms": 60.0, "peak_GiB": 3.0},
            {"head_dim": 64, "T": 4096, "attn": "sdpa", "step_ms": 100.0, "peak_GiB": 4.0},
            {"head_dim": 64, "T": 4096, "attn": "holo", "step_ms": 80.0, "peak_GiB": 3.5},
            {"head_dim": 64, "T": 4096, "attn": "gauge", "error": "OutOfMemoryError: CUDA out of memory"}]
    floor, sdpa, holo, gauge = bench.ratios(rows)
    assert floor["x_sdpa"] == pytest.approx(100 / 60) and floor["attention_ms"] is None
    assert sdpa["x_sdpa"] == 1.0 and sdpa["attention_ms"] == 40.0 and sdpa["attention_x_sdpa"] == 1.0
    assert holo["x_sdpa"] == 1.25 and holo["attention_ms"] == 20.0 and holo["attention_x_sdpa"] == 2.0
    assert gauge["x_sdpa"] is None and gauge["attention_ms"] is None and gauge["attention_x_sdpa"] is None
    lines = bench.table(rows).splitlines()
    assert lines[2] == "| 64 | 4096 | floor | 60.0 | 1.67 | - | - | 3.00 |"
    assert lines[4] == "| 64 | 4096 | holo | 80.0 | 1.25 | 20.0 | 2.00 | 3.50 |"
    assert lines[5] == "| 64 | 4096 | gauge | OutOfMemoryError: CUDA out of memory | - | - | - | - |"


def test_unknown_attention_exits_2_naming_it_and_the_known_ones(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--smoke", "--attn", "sdpa", "flash9", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown --attn ['flash9']" in err and all(n in err for n in ("sdpa", "holo", "performer", "gauge"))
    assert not (tmp_path / "model_step.json").exists()


def test_null_attention_returns_the_value_heads_and_keeps_query_and_key_gradients(bench):
    import torch

    q, k, v = (torch.randn(1, h, 5, 8, requires_grad=True) for h in (4, 2, 2))
    out, weights = bench.null_attention(None, q, k, v, None)
    assert weights is None and out.shape == (1, 5, 4, 8) and out.is_contiguous()
    assert torch.equal(out, v.repeat_interleave(2, dim=1).transpose(1, 2))  # query heads 0, 1 read kv head 0
    out.sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q)) and torch.equal(v.grad, torch.full_like(v, 2.0))


def test_replot_adds_the_profiled_kernel_columns_and_drops_noise_ratios(bench, tmp_path):
    rows = [{"head_dim": 128, "T": 4096, "attn": "floor", "step_ms": 25.0, "attention_kernel_ms": 0.0},
            {"head_dim": 128, "T": 4096, "attn": "sdpa", "step_ms": 24.9, "attention_kernel_ms": 2.4},
            {"head_dim": 128, "T": 4096, "attn": "holo", "step_ms": 24.0, "attention_kernel_ms": 1.6}]
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps({"env": {"device": "gpu", "hidden": 64, "layers": 2, "dtype": "torch.bfloat16"},
                                 "rows": bench.ratios(rows)}))
    bench.main(["--replot", str(saved), "--out", str(tmp_path / "again")])
    lines = (tmp_path / "again" / "model_step.md").read_text().splitlines()
    assert lines[0].endswith("| attention kernels ms | kernels x sdpa |")
    # a step under the floor (noise) has no attention ratio; the kernel time still gives one
    assert lines[4] == "| 128 | 4096 | holo | 24.0 | 1.04 | -1.0 | - | - | 1.6 | 1.50 |"
    assert json.loads((tmp_path / "again" / "model_step.json").read_text())["rows"] == bench.ratios(rows)
