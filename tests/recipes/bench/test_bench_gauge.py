"""recipes/bench/bench_gauge.py: the smoke run on CPU, and how --tune picks each fused kernel's launch settings."""
import json
from types import SimpleNamespace

import torch
from recipe_runs import load_script

from hf_attn.attention.gauge import kernel as gk


def load():
    return load_script("bench/bench_gauge.py")


def test_smoke_run_times_gauge_both_ways_against_sdpa(tmp_path):
    load().main(["--smoke", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "bench_gauge.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"sdpa", "gauge", "gauge-sdpa", "gauge-explicit"}
    assert all(r["fwd"] > 0 for r in rows) and all(r["fwd_throughput_vs_best_sdpa"] > 0 for r in rows)


def test_tune_keeps_each_kernels_fastest_setting_and_records_failures(monkeypatch):
    bench = load()
    key = gk.launch_key(32, torch.float32)
    monkeypatch.setitem(gk.LAUNCH, key, dict(gk.LAUNCH[key]))  # restored after the test
    fastest = {name: cands[-1] for name, cands in bench.TUNE_CANDIDATES.items()}
    broken = bench.TUNE_CANDIDATES["_bwd_dq"][0]

    def timer(step):
        launch = gk.LAUNCH[key]
        if launch["_bwd_dq"] == broken and launch["_fwd"] == fastest["_fwd"]:
            raise RuntimeError("out of shared memory")
        return sum(1.0 if launch[n] == fastest[n] else 2.0 for n in fastest)

    args = SimpleNamespace(batch=1, heads=2, head_dim=32, tune_kernels=None)
    tuned = bench.tune(64, args, torch.device("cpu"), torch.float32, timer=timer)
    assert tuned["best"] == {n: list(c) for n, c in fastest.items()} and gk.LAUNCH[key] == fastest
    args.tune_kernels = ["_fwd"]  # only the forward's candidates are tried
    gk.LAUNCH[key]["_fwd"] = bench.TUNE_CANDIDATES["_fwd"][0]
    tried = {t["kernel"] for t in bench.tune(64, args, torch.device("cpu"), torch.float32, timer=timer)["trials"]}
    assert tried == {"_fwd"} and gk.LAUNCH[key]["_fwd"] == fastest["_fwd"]
    errors = [t for t in tuned["trials"] if "error" in t]
    assert [(t["kernel"], t["launch"]) for t in errors] == [("_bwd_dq", broken)]
    assert "out of shared memory" in errors[0]["error"]
