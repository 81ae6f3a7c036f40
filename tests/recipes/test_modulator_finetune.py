"""The modulator fine-tuning recipe runs end to end on a tiny model and writes its outputs."""
import importlib.util
import json
from pathlib import Path

RECIPE = Path(__file__).parents[2] / "recipes" / "modulator_finetune.py"


def test_smoke_run_writes_metrics_plots_and_wrappers(tmp_path):
    spec = importlib.util.spec_from_file_location("modulator_finetune", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    assert recipe.main(["--smoke", "--steps", "3", "--log-every", "1", "--threads", "2", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    for kind in ("residual", "field"):
        assert summary[kind]["perplexity_base"] > 1 and len(summary[kind]["alpha_final"]) == 2
        assert (tmp_path / f"alpha_cv_{kind}.png").exists() and (tmp_path / f"wrapper_{kind}" / "hf_attn_wrapper.json").exists()
        assert len((tmp_path / f"metrics_{kind}.csv").read_text().splitlines()) == 4  # header + steps 1, 2, 3
