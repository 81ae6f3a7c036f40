"""recipes/evidence/stage_lr.py on CPU at toy size: each rate trains `hf-attn convert`'s own stages, and the default
stage-1 rate moves the variant's maps further than the old 1e-3 in the same steps."""
import importlib.util
import json
import math
from pathlib import Path

from hf_attn.harness.convert import ConvertSettings

SCRIPT = Path(__file__).resolve().parents[3] / "recipes" / "evidence" / "stage_lr.py"


def test_sweep_trains_each_stage_per_rate(tmp_path):
    spec = importlib.util.spec_from_file_location("stage_lr", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--out", str(tmp_path), "--variants", "performer", "--lrs", "1e-3", str(ConvertSettings.lr),
                 "--recover-lrs", "1e-3", "--steps", "3", "--recover-steps", "2", "--seq-len", "64", "--windows", "2"])
    rows = json.loads((tmp_path / "stage_lr.json").read_text())["rows"]["performer"]
    old, new, recovered = rows["lr 0.001"], rows[f"lr {ConvertSettings.lr:g}"], rows["recover lr 0.001"]
    runs = tmp_path / "runs"
    assert (runs / "performer_lr0.001" / "transfer" / "final").is_dir()
    assert (runs / f"performer_lr{ConvertSettings.lr:g}" / "recover_lr0.001" / "final").is_dir()
    assert all(math.isfinite(r["ppl"]) for r in (old, new, recovered))
    assert new["ppl"] != rows["swap"]["ppl"] and recovered["ppl"] != new["ppl"]
    assert new["last_loss"] < old["last_loss"], rows
    assert "| performer |" in (tmp_path / "stage_lr.md").read_text()
