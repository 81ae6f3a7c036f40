"""recipes/train/modulator_{residual,field}_smollm2.yaml through the trainer: alpha/CV health per diagnostics
pass, its first/last summary and plot, and the field modulator's optimizer groups."""
import json

import pytest

from recipe_runs import RECIPES, run_tiny


@pytest.mark.parametrize("kind", ["residual", "field"])
def test_recipe_logs_health_and_summarises_it(kind, tmp_path, tiny_pretrained):
    run = run_tiny(RECIPES / f"train/modulator_{kind}_smollm2.yaml", tmp_path / "run", tiny_pretrained,
                   **{"train.steps": 3, "train.diag_every": 1, "train.eval_every": 3})
    rows = [r["modulator_health"] for r in run["diagnostics"]]
    assert len(rows) == 4 and all(0 < r["alpha_mean"] < 1 and "cv/states" in r for r in rows)
    summary = run["summary"]["modulator_health"]
    assert summary["first"]["alpha_mean"] == pytest.approx(0.01, rel=1e-4)  # before training: initial_alpha
    assert summary["last"]["alpha_mean"] != summary["first"]["alpha_mean"]  # the alphas trained
    assert list(summary["alpha_last"]) == ["model.layers.0"]
    assert ("validity/k4" in summary["last"]) == (kind == "field")
    assert (tmp_path / "run" / summary["figure"]).stat().st_size > 0
    assert (tmp_path / "run" / "final" / "hf_attn_wrapper.json").is_file()
    state = json.loads(next((tmp_path / "run" / "checkpoints").glob("step_*/trainer_state.json")).read_text())
    lrs = [5e-4, 2.5e-3, 5e-3] if kind == "field" else [5e-3]  # field: experts x gradient_scale, alphas x 0.5, gates
    assert state["scheduler"]["base_lrs"] == pytest.approx(lrs)
