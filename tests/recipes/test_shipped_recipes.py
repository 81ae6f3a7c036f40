"""Every shipped recipe runs as written, at a tiny size: each training YAML (recipes/train/) through
`python -m hf_attn.train` with `--set` overrides, each sweep YAML (recipes/sweeps/) through `run_sweep`.

Recipes are found by globbing their folders, so a new one is covered without touching this file; sizes
shrink as `recipe_runs.TINY` says. Runs go in-process (a subprocess per run costs seconds of imports);
accelerate's process-wide state is reset between runs (tests/recipes/conftest.py), since recipes differ in
mixed precision.
"""
import csv
import re

import pytest
import yaml
from accelerate.state import AcceleratorState, GradientState

from hf_attn.harness import sweep
from hf_attn.train.__main__ import main as train_main
from hf_attn.train.config import load_yaml
from recipe_runs import RECIPES, run_tiny, tiny_overrides

TRAIN = sorted((RECIPES / "train").glob("*.yaml"))
SWEEPS = sorted((RECIPES / "sweeps").glob("*.yaml"))
FOLDERS = {"train", "sweeps", "accelerate", "bench", "evidence", "convert"}


def test_recipes_are_found_and_sorted_by_kind():
    assert len(TRAIN) >= 14 and len(SWEEPS) >= 2
    assert all("grid" not in yaml.safe_load(p.read_text()) for p in TRAIN)
    assert all("grid" in yaml.safe_load(p.read_text()) for p in SWEEPS)
    loose = [p.name for p in RECIPES.iterdir() if p.is_file() and p.name != "README.md"]
    folders = {p.name for p in RECIPES.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert not loose and folders <= FOLDERS, (loose, folders - FOLDERS)


def test_readme_lists_every_recipe():
    readme = (RECIPES / "README.md").read_text()
    listed = set(re.findall(r"`((?:train|sweeps|accelerate|bench|evidence)/[\w.]+)`", readme))
    shipped = {str(p.relative_to(RECIPES)) for p in RECIPES.glob("*/*") if p.is_file()
               and p.parent.name in FOLDERS - {"convert"}}
    assert listed == shipped, (shipped - listed, listed - shipped)


@pytest.mark.parametrize("path", TRAIN, ids=lambda p: p.stem)
def test_training_recipe_runs(path, tmp_path, tiny_pretrained):
    assert run_tiny(path, tmp_path / "run", tiny_pretrained)["final"]["step"] == 2


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_recipe_runs_every_point(path, tmp_path, tiny_pretrained, monkeypatch):
    spec = yaml.safe_load(path.read_text())
    spec["base"] = str((path.parent / spec["base"]).resolve())
    spec["out_dir"] = str(tmp_path / "out")
    spec["set"] = {**(spec.get("set") or {}), **tiny_overrides(load_yaml(spec["base"]), tiny_pretrained)}
    tiny = tmp_path / path.name
    tiny.write_text(yaml.safe_dump(spec))

    def in_process(cmd, stdout=None, stderr=None):  # `python -m hf_attn.train --config X`, without the python
        try:
            return train_main(cmd[cmd.index("hf_attn.train") + 1:])
        finally:
            AcceleratorState._reset_state(True)
            GradientState._reset_state()

    monkeypatch.setattr(sweep.subprocess, "call", in_process)
    rows = list(csv.DictReader(sweep.run_sweep(tiny).open()))
    grid_points = 1
    for values in spec["grid"].values():
        grid_points *= len(values)
    assert len(rows) == grid_points and all(r["status"] == "done" and float(r["eval_loss"]) > 0 for r in rows), rows
