"""Every shipped recipe runs as written, at a tiny size: each training YAML through `python -m hf_attn.train`
with `--set` overrides, each sweep YAML through `run_sweep`, and each fine-tune script through its `main`.

Recipes are found by globbing recipes/, so a new one is covered without touching this file. Only sizes change
(width, depth, length, batch, steps); attention, wrapper, task, corpus, optimiser and mixed precision stay as
written. A recipe that loads SmolLM2 (`model.model_path`) gets `--set model.model_path=<tiny folder>`, a
one-layer random Llama with SmolLM2's tokenizer (`tiny_pretrained`): same code path, seconds instead of minutes.
Runs go in-process (a subprocess per run costs seconds of imports); accelerate's process-wide state is reset
between runs, since recipes differ in mixed precision.
"""
import csv
import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from accelerate.state import AcceleratorState, GradientState

from hf_attn.harness import sweep
from hf_attn.train.__main__ import main as train_main
from hf_attn.train.config import load_yaml

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY = {"model.hidden_size": 32, "model.num_layers": 1, "model.num_heads": 2, "data.seq_len": 17,
        "data.batch_size": 1, "data.eval_batches": 1, "data.max_chars": 20000, "train.steps": 2,
        "train.log_every": 1, "train.eval_every": 2, "train.diag_every": 2, "train.diag_tokens": 8}
# fine-tune scripts: tiny command-line flags per script ({tiny}: the tiny SmolLM2 stand-in, {out}: run folder)
SCRIPTS = {
    "prismatic_finetune.py": [
        ["--version", v, "--model-path", "{tiny}", "--steps", "2", "--seq-len", "16", "--batch", "1",
         "--eval-windows", "1", "--threads", "2", "--out", "{out}"] for v in ("v2", "v3")],
    "modulator_finetune.py": [["--smoke", "--steps", "2", "--log-every", "1", "--threads", "2", "--out", "{out}"]],
}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


TRAIN = [p for p in sorted(RECIPES.glob("*.yaml")) if "grid" not in _load(p)]
SWEEPS = [p for p in sorted(RECIPES.glob("*.yaml")) if "grid" in _load(p)]


@pytest.fixture(autouse=True)
def _fresh_accelerate():
    """Each run builds its own Accelerator; accelerate refuses a second one with another mixed precision."""
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _tiny(recipe: dict, tiny_pretrained: Path) -> dict:
    overrides = dict(TINY)
    if (recipe.get("model") or {}).get("model_path"):
        overrides["model.model_path"] = str(tiny_pretrained)
    return overrides


def _final(run_dir: Path) -> dict:
    return json.loads((run_dir / "final.json").read_text())


def test_recipes_are_found():
    assert len(TRAIN) >= 10 and len(SWEEPS) >= 2 and set(SCRIPTS) == {p.name for p in RECIPES.glob("*_finetune.py")}


@pytest.mark.parametrize("path", TRAIN, ids=lambda p: p.stem)
def test_training_recipe_runs(path, tmp_path, tiny_pretrained):
    sets = [f"--set={k}={v}" for k, v in _tiny(load_yaml(path), tiny_pretrained).items()]
    assert train_main(["--config", str(path), *sets, "--out_dir", str(tmp_path / "run")]) == 0
    assert _final(tmp_path / "run")["step"] == 2


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_recipe_runs_every_point(path, tmp_path, tiny_pretrained, monkeypatch):
    spec = _load(path)
    spec["base"] = str((path.parent / spec["base"]).resolve())
    spec["out_dir"] = str(tmp_path / "out")
    spec["set"] = {**(spec.get("set") or {}), **_tiny(load_yaml(spec["base"]), tiny_pretrained)}
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


@pytest.mark.parametrize("script,argv", [(s, a) for s, runs in SCRIPTS.items() for a in runs],
                         ids=lambda x: x if isinstance(x, str) else " ".join(x[:2]))
def test_finetune_script_runs(script, argv, tmp_path, tiny_pretrained):
    spec = importlib.util.spec_from_file_location(script[:-3], RECIPES / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([a.format(tiny=tiny_pretrained, out=tmp_path) for a in argv])
    assert json.loads((tmp_path / "summary.json").read_text())
