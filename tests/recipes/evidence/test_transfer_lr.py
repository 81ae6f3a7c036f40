"""recipes/evidence/transfer_lr.py on CPU at toy size: each rate trains `hf-attn convert`'s own stage 1, and the
default rate moves the variant's maps further than the old 1e-3 in the same steps."""
import importlib.util
import json
import math
from pathlib import Path

from hf_attn.harness.convert import ConvertSettings

SCRIPT = Path(__file__).resolve().parents[3] / "recipes" / "evidence" / "transfer_lr.py"


def test_sweep_trains_stage_one_per_rate(tmp_path):
    spec = importlib.util.spec_from_file_location("transfer_lr", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--out", str(tmp_path), "--variants", "performer", "--lrs", "1e-3", str(ConvertSettings.lr),
                 "--steps", "3", "--seq-len", "64", "--windows", "2"])
    rows = json.loads((tmp_path / "transfer_lr.json").read_text())["rows"]["performer"]
    old, new = rows["lr 0.001"], rows[f"lr {ConvertSettings.lr:g}"]
    assert (tmp_path / "runs" / "performer_lr0.001" / "transfer" / "final").is_dir()
    assert all(math.isfinite(r["ppl"]) for r in (old, new)) and new["ppl"] != rows["swap"]["ppl"]
    assert new["last_loss"] < old["last_loss"], rows
    assert "| performer |" in (tmp_path / "transfer_lr.md").read_text()
