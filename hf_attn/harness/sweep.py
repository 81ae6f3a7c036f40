"""Sweeps: every combination of a grid over any recipe fields, one training subprocess per point.

    base: charlm_tt.yaml              # recipe each run starts from (relative to the sweep file)
    out_dir: runs/sweep_seq_rank_tt   # run folders + sweep.csv
    grid: {data.seq_len: [512, 1024, 2048], model.wrapper.rank: [8, 16, 32]}
    set: {train.steps: 200}           # applied to every run
    launcher: []                      # prefix, e.g. [accelerate, launch, --multi_gpu, --num_processes, "2"]

Runs are subprocesses so that one failure (e.g. out of memory at 2k tokens) is recorded and the sweep goes on,
and peak-memory figures never leak between runs. A finished run (final.json present) is skipped, so an
interrupted sweep continues where it stopped.
"""
from __future__ import annotations

import csv
import io
import itertools
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from ..train.config import TrainConfig, load_yaml, set_nested
from ..train.models import check_names
from ..train.rundir import read_run, summarize
from ..utils import HfAttnError, write_text_atomic


@dataclass
class SweepPoint:
    """One grid point of a sweep: its values, the resolved recipe, its run folder and, once run, its summary."""

    name: str
    values: dict[str, Any]
    recipe: dict[str, Any]
    run_dir: Path
    status: str = "pending"
    summary: dict[str, Any] = field(default_factory=dict)


def load_sweep(path: str | Path) -> tuple[dict[str, Any], list[SweepPoint]]:
    """Parse and validate a sweep file; every grid point's recipe is validated before anything runs."""
    path = Path(path)
    spec = yaml.safe_load(path.read_text()) if path.is_file() else None
    if not isinstance(spec, dict):
        raise HfAttnError(f"{path} is not a sweep file (a mapping with base, out_dir, grid).")
    unknown = set(spec) - {"base", "out_dir", "grid", "set", "launcher"}
    if unknown:
        raise HfAttnError(f"Unknown sweep key(s) {sorted(unknown)} in {path}; valid: base, out_dir, grid, set, launcher.")
    grid = spec.get("grid") or {}
    if not spec.get("base") or not isinstance(grid, dict) or not grid:
        raise HfAttnError(f"{path} needs 'base: <recipe.yaml>' and a non-empty 'grid: {{field: [values]}}'.")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise HfAttnError(f"grid.{key} in {path} must be a non-empty list of values.")
    base = load_yaml(path.parent / spec["base"])
    out_dir = Path(spec.get("out_dir") or Path("runs") / path.stem)
    points = []
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        recipe = yaml.safe_load(yaml.safe_dump(base))  # deep copy
        for key, value in {**(spec.get("set") or {}), **values}.items():
            set_nested(recipe, key, value)
        name = f"{path.stem}__" + "__".join(f"{k.split('.')[-1]}={v}" for k, v in values.items())
        recipe["name"], recipe["out_dir"] = name, str(out_dir / name)
        check_names(TrainConfig.from_dict(recipe).model)
        points.append(SweepPoint(name, values, recipe, out_dir / name))
    return {"out_dir": out_dir, "launcher": [str(a) for a in spec.get("launcher") or []], "grid": grid}, points


def command(launcher: list[str], recipe_path: Path) -> list[str]:
    """The command line that trains one point: `launcher -m hf_attn.train ...`, or this Python without a launcher."""
    train = ["-m", "hf_attn.train", "--config", str(recipe_path)]
    return (launcher + train) if launcher else [sys.executable, *train]


def run_sweep(path: str | Path, dry_run: bool = False) -> Path:
    """Run every grid point not yet finished, then write `<out_dir>/sweep.csv`; returns its path."""
    spec, points = load_sweep(path)
    out_dir: Path = spec["out_dir"]
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in tqdm(points, desc="sweep", dynamic_ncols=True):
        recipe_path = out_dir / f"{p.name}.yaml"
        write_text_atomic(recipe_path, yaml.safe_dump(p.recipe, sort_keys=False))
        if (p.run_dir / "final.json").is_file():
            p.status = "done (skipped)"
        elif dry_run:
            p.status = "dry run: " + " ".join(command(spec["launcher"], recipe_path))
        else:
            p.run_dir.mkdir(parents=True, exist_ok=True)
            with open(out_dir / f"{p.name}.log", "w") as log:
                rc = subprocess.call(command(spec["launcher"], recipe_path), stdout=log, stderr=subprocess.STDOUT)
            p.status = "done" if rc == 0 else f"failed (exit {rc}, see {p.name}.log)"
        if (p.run_dir / "metrics.csv").is_file() and (p.run_dir / "config.yaml").is_file():
            p.summary = summarize(read_run(p.run_dir))
    table = out_dir / "sweep.csv"
    write_text_atomic(table, sweep_table(spec["grid"], points))
    return table


def sweep_table(grid: dict[str, list], points: list[SweepPoint]) -> str:
    """CSV text with one row per point: the grid values, status and the headline metrics."""
    keys = ["eval_loss", "quality", "quality_metric", "tokens_per_s", "peak_mem_mb", "params_trainable"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", *grid, "status", *keys])
    for p in points:
        w.writerow([p.name, *p.values.values(), p.status, *(p.summary.get(k, "") for k in keys)])
    return buf.getvalue()
