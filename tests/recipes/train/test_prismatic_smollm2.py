"""recipes/train/prismatic_v{2,3}_smollm2.yaml through the trainer: the routing metrics at every diagnostics
pass, the collapse verdict, the v2 mask drift and the routing plot come out of the run folder."""
from pathlib import Path

from recipe_runs import RECIPES, run_tiny

DIAG_EVERY_STEP = {"train.steps": 3, "train.diag_every": 1, "train.eval_every": 3}


def test_v2_recipe_logs_routing_every_step_and_summarises_collapse_and_drift(tmp_path, tiny_pretrained):
    run = run_tiny(RECIPES / "train/prismatic_v2_smollm2.yaml", tmp_path / "run", tiny_pretrained, **DIAG_EVERY_STEP)
    rows = run["diagnostics"]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]  # before training, then every step
    assert all(0 < r["prismatic"]["routing/concentration"] <= 1 and "routing/expert_2_weight" in r["prismatic"]
               for r in rows)
    assert rows[0]["prismatic"]["mask_drift/max"] == 0.0  # the reference itself
    summary = run["summary"]["prismatic"]
    assert summary["collapsed"] is False and summary["steps"] == [0, 3]
    assert set(summary["mask_drift"]) == {"mean", "max", "tensors"} and summary["mask_drift"]["tensors"] >= 3
    assert summary["max_concentration_seen"] >= summary["routing_last"]["routing/concentration"]
    assert (tmp_path / "run" / summary["figure"]).stat().st_size > 0


def test_v3_recipe_routes_attention_without_perturbed_views(tmp_path, tiny_pretrained):
    run = run_tiny(RECIPES / "train/prismatic_v3_smollm2.yaml", tmp_path / "run", tiny_pretrained, **DIAG_EVERY_STEP)
    summary = run["summary"]["prismatic"]
    assert summary["mask_drift"] == {}  # scale 0: nothing is selected, so nothing can drift
    assert any("self_attn" in k for k in run["diagnostics"][-1]["prismatic"])
    assert Path(tmp_path / "run" / "prismatic_routing.png").is_file()
