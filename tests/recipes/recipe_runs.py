"""Run a shipped recipe at a tiny size, or load a recipe script as a module (importable by name:
tests/conftest.py puts this folder on sys.path).

Only sizes change (width, depth, length, batch, steps); attention, wrapper, task, corpus, optimiser and mixed
precision stay as written. A recipe that loads SmolLM2 (`model.model_path`) gets the `tiny_pretrained` folder
instead, a one-layer random Llama with SmolLM2's tokenizer: same code path, seconds instead of minutes.
"""
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from hf_attn.train.__main__ import main as train_main
from hf_attn.train.config import load_yaml
from hf_attn.train.rundir import JsonRows

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY = {"model.hidden_size": 32, "model.num_layers": 1, "model.num_heads": 2, "data.seq_len": 17,
        "data.batch_size": 1, "data.eval_batches": 1, "data.max_chars": 20000, "train.steps": 2,
        "train.log_every": 1, "train.eval_every": 2, "train.diag_every": 2, "train.diag_tokens": 8}


def tiny_overrides(recipe: dict, tiny_pretrained: Path) -> dict:
    """TINY, plus the tiny SmolLM2 stand-in for a recipe that loads a pretrained model."""
    overrides = dict(TINY)
    if (recipe.get("model") or {}).get("model_path"):
        overrides["model.model_path"] = str(tiny_pretrained)
    return overrides


def run_tiny(path: Path, run_dir: Path, tiny_pretrained: Path, **extra) -> dict:
    """Train `path` through `python -m hf_attn.train` at TINY sizes (`extra` overrides on top); returns the run's
    final.json, diagnostics rows and diagnostics summary."""
    sets = {**tiny_overrides(load_yaml(path), tiny_pretrained), **extra}
    assert train_main(["--config", str(path), *(f"--set={k}={v}" for k, v in sets.items()),
                       "--out_dir", str(run_dir)]) == 0
    return {"final": json.loads((run_dir / "final.json").read_text()),
            "diagnostics": JsonRows.load(run_dir / "diagnostics.jsonl"),
            "summary": json.loads((run_dir / "diagnostics_summary.json").read_text())}


def load_script(relative: str) -> ModuleType:
    """`recipes/<relative>` as a module, its folder on sys.path as when it runs as a script (bench scripts import
    their neighbours)."""
    path = RECIPES / relative
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
