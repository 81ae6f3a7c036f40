"""recipes/bench/bench_decode.py: the CPU smoke run times every variant and checks cached decoding against full forwards."""
import json

import pytest
from recipe_runs import load_script


def test_smoke_run_times_variants_and_cached_decoding_equals_full_forwards(tmp_path):
    bench = load_script("bench/bench_decode.py")
    bench.main(["--smoke", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "decode.json").read_text())
    assert {(r["attn"], r["kind"]) for r in saved["rows"]} == {(a, k) for a in bench.VARIANTS for k in ("prefill", "decode")}
    assert all(r["tokens_per_s"] > 0 for r in saved["rows"])
    assert [d["attn"] for d in saved["drift"]] == list(bench.VARIANTS)
    assert all(d["rel_diff"] < 1e-4 and d["argmax_agree"] == 1.0 for d in saved["drift"])  # fp32 on CPU
    assert "argmax agreement" in (tmp_path / "decode.md").read_text() and (tmp_path / "decode.png").stat().st_size


def test_compare_times_eager_and_compiled_decoding_against_both_sdpa_baselines(tmp_path):
    """`--compare`: every setting timed through generate, compiled ones included, and all agree with full forwards."""
    bench = load_script("bench/bench_decode.py")
    bench.main(["--smoke", "--compare", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]
    assert [r["setting"] for r in rows] == [label for label, _, _ in bench.COMPARED]
    assert all(r["tokens_per_s"] > 0 and r["rel_diff"] < 1e-4 and r["argmax_agree"] == 1.0 for r in rows)
    assert all(abs(r["wall_ms_per_token"] * r["tokens_per_s"] / 1000 - 1) < 1e-3 for r in rows)
    assert all(r["gpu_ms_per_token"] is None for r in rows)  # GPU busy time is profiled on CUDA only
    md = (tmp_path / "compare.md").read_text()
    assert "x sdpa static+compile" in md and "| GPU busy ms/token |" in md


def test_compare_times_window_hybrids_eager_and_compiled(tmp_path):
    """`--compare --window 8`: holo/performer decode as window hybrids (buffer full after the 64-token prompt) through
    both caches, compiled included, and agree with full forwards; sdpa stays full attention."""
    bench = load_script("bench/bench_decode.py")
    bench.main(["--smoke", "--compare", "--window", "8", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]
    assert [r["setting"] for r in rows] == ["sdpa dynamic", "sdpa static+compile", "holo + window 8",
                                            "holo + window 8 compiled", "performer + window 8",
                                            "performer + window 8 compiled"]
    assert all(r["rel_diff"] < 1e-4 and r["argmax_agree"] == 1.0 for r in rows)


def test_compare_settings_picks_variant_settings_and_keeps_both_baselines(tmp_path, capsys):
    bench = load_script("bench/bench_decode.py")
    bench.main(["--smoke", "--compare", "--window", "8", "--settings", "holo compiled", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]
    assert [r["setting"] for r in rows] == ["sdpa dynamic", "sdpa static+compile", "holo + window 8 compiled"]
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--smoke", "--compare", "--settings", "holo fused", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "unknown --settings ['holo fused']" in capsys.readouterr().err
