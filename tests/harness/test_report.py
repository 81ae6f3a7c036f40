"""The GO/NO-GO rule on constructed numbers, and the report rendered from fixture run folders."""
import json

import pytest
import yaml

from hf_attn.harness.report import Point, build_report, verdict
from hf_attn.train.rundir import MetricsCsv

BASE = [Point(512, 2.00, 1000.0), Point(1024, 1.90, 2000.0)]


@pytest.mark.parametrize("variant, go, why", [
    ([Point(512, 2.09, 790.0)], True, "less memory"),  # +4.5% quality, -21% memory
    ([Point(512, 2.11, 500.0)], False, "quality outside"),  # +5.5%: too much worse
    ([Point(512, 2.00, 810.0)], False, "memory saving too small"),  # only -19%
    ([Point(512, 2.00, 1200.0), Point(1024, 2.04, 1000.0)], True, "T=1024 in 1000 MB <= baseline T=512"),  # 2x context
    ([Point(1024, 2.04, 1001.0)], False, "quality outside"),  # 2x context needs <= 1000 MB; at T=1024 worse than 1.90
    ([Point(768, 1.8, 10.0)], None, "no seq_len in common"),  # neither same T nor >= 2x
])
def test_rule_lower_is_better(variant, go, why):
    v = verdict(BASE, variant)
    assert v.go is go and why in v.reason


def test_rule_accuracy_and_missing_baseline():
    assert verdict([Point(129, 1.0, 100.0)], [Point(129, 0.951, 79.0)], higher_is_better=True).go is True
    assert verdict([Point(129, 1.0, 100.0)], [Point(129, 0.949, 79.0)], higher_is_better=True).go is False
    assert verdict([], [Point(129, 1.0, 1.0)]).label == "n/a"


def fixture_run(root, name, attention, seq_len, bpc, mem, tok_s, wrapper=None, recipe_name=None, steps=30,
                memory_kind="cuda_max_allocated"):
    path = root / name
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"name": recipe_name or name, "task": "char", "data": {"seq_len": seq_len},
                                                      "model": {"attention": attention, "wrapper": wrapper}}))
    m = MetricsCsv(path / "metrics.csv")
    for step in (steps // 3, 2 * steps // 3, steps):
        m.rows.append({"step": step, "loss": 3.0 / step, "tokens_per_s": tok_s, "peak_mem_mb": mem})
    m.rows[-1].update({"eval_loss": bpc * 0.693, "eval_bpc": bpc})
    m.flush()
    (path / "run.json").write_text(json.dumps({"data": "char-LM on fixture corpus: 1 M chars", "quality_metric": "eval_bpc",
                                               "memory_kind": memory_kind, "params_trainable": 1000}))
    (path / "final.json").write_text(json.dumps({"step": steps}))
    return path


def test_report_renders_from_fixture_runs(tmp_path):
    runs = tmp_path / "runs"
    for t, mem in ((512, 1000), (1024, 2000)):
        fixture_run(runs, f"sdpa_{t}", "sdpa", t, 2.0, mem, 5000)
        fixture_run(runs, f"holo_{t}", "holo", t, 2.05, mem * 0.5, 8000)
        for r in (8, 16):
            fixture_run(runs, f"tt_{t}_{r}", "sdpa", t, 2.5 - r / 100, mem * 0.95, 4000, {"type": "tt", "rank": r})
    (runs / "holo_512" / "pruning.csv").write_text(
        "order,entropy,heads_pruned,fraction,eval_loss,quality_metric,quality\n"
        "low,entanglement,0,0,1.4,eval_bpc,2.05\nlow,entanglement,2,0.25,1.5,eval_bpc,2.2\n"
        "high,entanglement,0,0,1.4,eval_bpc,2.05\nhigh,entanglement,2,0.25,1.6,eval_bpc,2.4\n")
    report = build_report([runs], tmp_path / "out", command="hf-attn report runs")
    text = report.read_text()
    assert "| holo | **GO** |" in text and "| sdpa+tt(rank=8) | **NO-GO** |" in text
    assert "1 M chars" in text and "hf-attn report runs" in text and "Rule: GO if" in text
    for fig in ("loss_0_char.png", "scaling_0_char.png", "rank_0_char.png", "pruning_"):
        assert fig in text
    assert len(list((tmp_path / "out").glob("*.png"))) == 4


def test_runs_are_named_by_their_folder_not_their_recipe(tmp_path):
    """Two runs of one recipe with different overrides (`--set model.attention=...`) stay apart in the table."""
    runs = tmp_path / "runs"
    fixture_run(runs, "rec_sdpa", "sdpa", 512, 2.0, 1000, 5000, recipe_name="recovery")
    fixture_run(runs, "rec_gauge", "gauge", 512, 2.1, 1000, 5000, recipe_name="recovery")
    text = build_report([runs], tmp_path / "out", command="hf-attn report runs").read_text()
    assert "| rec_sdpa | char | sdpa |" in text and "| rec_gauge | char | gauge |" in text
    (runs / "rec_gauge" / "final.json").unlink()  # an unfinished variant: no verdict, and the report says why
    text = build_report([runs], tmp_path / "out2", command="hf-attn report runs").read_text()
    assert "No verdict: it needs finished runs" in text and "(unfinished)" in text


def test_verdicts_compare_runs_of_equal_length(tmp_path):
    """A 100-step sweep point is not judged against a 400-step baseline, only against one of its own length."""
    runs = tmp_path / "runs"
    fixture_run(runs, "sdpa_long", "sdpa", 512, 2.0, 1000, 5000, steps=400)
    fixture_run(runs, "holo_short", "holo", 512, 3.0, 500, 5000, steps=100)
    text = build_report([runs], tmp_path / "out").read_text()
    assert "| 100 | holo | **n/a** | no baseline run |" in text
    fixture_run(runs, "sdpa_short", "sdpa", 512, 2.9, 1000, 5000, steps=100)
    text = build_report([runs], tmp_path / "out2").read_text()
    assert "| 100 | holo | **GO** |" in text


@pytest.mark.parametrize("quality, go", [(2.01, None), (2.5, False)])
def test_cpu_memory_is_not_judged(quality, go):
    """CPU max RSS is not comparable across variants: a 2x "saving" must not make a GO; quality alone can NO-GO."""
    cpu_base = [Point(512, 2.00, 1000.0, memory_comparable=False)]
    v = verdict(cpu_base, [Point(512, quality, 500.0, memory_comparable=False)])
    assert v.go is go and "memory: not judged on CPU" in v.reason and "0.50x" not in v.reason
    twice = verdict(cpu_base, [Point(1024, 2.0, 900.0, memory_comparable=False)])  # no 2x-context GO on RSS either
    assert twice.go is None


def test_report_on_cpu_runs_leaves_memory_out(tmp_path):
    runs = tmp_path / "runs"
    fixture_run(runs, "sdpa_cpu", "sdpa", 128, 2.0, 1000, 5000, memory_kind="cpu_max_rss")
    fixture_run(runs, "holo_cpu", "holo", 128, 2.02, 400, 5000, memory_kind="cpu_max_rss")
    text = build_report([runs], tmp_path / "out").read_text()
    assert "| holo | **n/a** | T=128: quality 2.02 vs 2; memory: not judged on CPU (" in text
