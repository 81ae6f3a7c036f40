"""The run folder: one layout written by the trainer and read back by push, sweep, prune and report.

    <run>/.lock              held (fcntl.flock) by the training process for the whole run; holds its pid
    <run>/config.yaml        resolved config (every default filled in)
    <run>/run.json           data description, parameter counts, device, processes, memory kind
    <run>/metrics.csv        one row per log step (METRIC_COLUMNS), rewritten atomically
    <run>/diagnostics.jsonl  one line per diagnostics pass (before the first step, then every diag_every):
                             step + every collector's output
    <run>/diagnostics_summary.json  each collector's end-of-run summary (e.g. prismatic: router collapse,
                             mask drift), beside the figures it drew (prismatic_routing.png, ...)
    <run>/checkpoints/       step_N/ resume states + `latest` (see checkpoint.py); never uploaded
    <run>/final/             the trained model, `hf_attn.save_pretrained` format (config.json with the variant and
                             wrapper, model.safetensors, hf_attn_wrapper.* when wrapped, the tokenizer of a
                             token run) + eval_results.json; `from_pretrained(run/final)` and
                             `hf-attn push run --repo-id user/name` read it
    <run>/final.json         written last: final metrics and per-process parameter checksums

Readers: `hf-attn push RUN` uploads `final/` with a card built from the records beside it; `hf-attn sweep`
skips a point whose final.json exists; `hf-attn prune` and `hf-attn report` read config.yaml, metrics.csv,
diagnostics.jsonl, run.json and final.json (prune loads the weights of the latest checkpoint).
Every write here is atomic (a temporary file renamed into place); a failed write raises `HfAttnError` naming
the file and the fix (`write_error`), and leaves the previous version of the file in place.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..utils import HfAttnError, write_text_atomic

LOCK_FILE = ".lock"
FINAL_DIR = "final"
EVAL_FILE = "eval_results.json"

METRIC_COLUMNS = [
    "step", "loss", "lr", "grad_norm", "tokens_per_s", "peak_mem_mb",
    "eval_loss", "eval_bpc", "eval_ppl", "eval_acc",
]


class JsonRows:
    """Rows kept in memory and rewritten atomically, so a killed run never leaves a torn file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []

    def truncate_after(self, step: int) -> None:
        """On resume: load what the earlier run wrote and forget rows past the checkpoint."""
        self.rows = [r for r in self.load(self.path) if int(r["step"]) <= step]

    def append(self, row: dict[str, Any]) -> None:
        """Add one row and rewrite the file, so a crash loses nothing already logged."""
        self.rows.append(row)
        self.flush()

    def flush(self) -> None:
        """Write every row to the file atomically."""
        with write_error(f"writing {self.path.name}", self.path):
            write_text_atomic(self.path, self.dumps())

    def dumps(self) -> str:
        """The rows as JSON Lines text."""
        return "".join(json.dumps(r) + "\n" for r in self.rows)

    @staticmethod
    def load(path: Path) -> list[dict[str, Any]]:
        """Rows of a JSON Lines file (empty when the file is absent)."""
        if not Path(path).is_file():
            return []
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class MetricsCsv(JsonRows):
    """metrics.csv: fixed columns, blank where a metric was not measured at that step."""

    def dumps(self) -> str:
        """The rows as CSV text with the fixed metric columns."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: _fmt(r.get(k)) for k in METRIC_COLUMNS})
        return buf.getvalue()

    @staticmethod
    def load(path: Path) -> list[dict[str, Any]]:
        """Rows of a metrics.csv with numbers parsed (empty when the file is absent)."""
        if not Path(path).is_file():
            return []
        with open(path, newline="") as f:
            return [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _fmt(v):
    if v is None:
        return ""
    return repr(v) if isinstance(v, float) else v


def _num(v: str):
    if v in ("", None):
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v else f


@dataclass
class Run:
    """A finished or partial run folder, as read back by sweep, prune and report."""

    path: Path
    config: dict[str, Any]
    info: dict[str, Any]
    metrics: list[dict[str, Any]]
    diagnostics: list[dict[str, Any]]
    final: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The run folder's name: unique per run, where one recipe's `name` serves runs with other overrides."""
        return self.path.name

    def last(self, column: str) -> float | None:
        """Last logged value of `column`, or None if it was never logged."""
        vals = [r[column] for r in self.metrics if r.get(column) is not None]
        return vals[-1] if vals else None

    def median(self, column: str) -> float | None:
        """Median over logged rows after the first (which includes warm-up and compilation)."""
        rows = self.metrics[1:] if len(self.metrics) > 2 else self.metrics
        vals = sorted(r[column] for r in rows if r.get(column) is not None and not math.isnan(r[column]))
        return vals[len(vals) // 2] if vals else None


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write the resolved config as the run's config.yaml, atomically."""
    path = Path(run_dir) / "config.yaml"
    with write_error("writing config.yaml", path):
        write_text_atomic(path, yaml.safe_dump(config, sort_keys=False))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented JSON, atomically; a failure names the file."""
    with write_error(f"writing {Path(path).name}", path):
        write_text_atomic(path, json.dumps(data, indent=2, default=str))


def _fix_for(err: OSError) -> str:
    """What the user can do about a failed write, by its errno."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full: free space there, or train into a folder on another disk (--out_dir)"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the folder is read-only or not writable: make it writable, or train into another folder (--out_dir)"
    return "check that the folder exists, is writable and has free space, or train into another folder (--out_dir)"


@contextlib.contextmanager
def write_error(what: str, path: Path) -> Iterator[None]:
    """Turn an OSError from a write into an HfAttnError that says what failed, where, and the fix.

    The trainer's writes are atomic, so the files already in the run folder stay as they were: after fixing
    the cause, `--resume` continues from the last complete checkpoint.
    """
    try:
        yield
    except OSError as err:
        raise HfAttnError(
            f"Training stopped {what} at {path}: {err.strerror or err}. Fix: {_fix_for(err)}; files written "
            "before are intact, so `--resume` continues from the last complete checkpoint."
        ) from err


@contextlib.contextmanager
def run_lock(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on the run folder for the whole run, so two trainings never interleave files.

    `fcntl.flock` on `<run>/.lock` (the file records the holder's pid); the kernel drops the lock when the
    process exits, however it exits, so a killed run never leaves a stale lock. Only the main process locks.
    """
    if not enabled:
        yield
        return
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    with write_error("creating the run folder's lock file", path):
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise HfAttnError(
                f"{run_dir} is in use by another training (pid {holder} holds {path}). Wait for it to finish, "
                "stop it, or train into another folder (--out_dir)."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_run(path: str | Path) -> Run:
    """Read a run folder written by `hf_attn.train` (config, metrics, diagnostics, final results)."""
    path = Path(path)
    if not (path / "config.yaml").is_file() or not (path / "metrics.csv").is_file():
        raise HfAttnError(f"{path} is not a run folder (needs config.yaml and metrics.csv written by hf_attn.train).")
    info = json.loads((path / "run.json").read_text()) if (path / "run.json").is_file() else {}
    final = json.loads((path / "final.json").read_text()) if (path / "final.json").is_file() else {}
    return Run(path, yaml.safe_load((path / "config.yaml").read_text()), info, MetricsCsv.load(path / "metrics.csv"),
               JsonRows.load(path / "diagnostics.jsonl"), final)


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Run folders at or below each path (a sweep folder holds many), in a stable order."""
    found: list[Run] = []
    for p in map(Path, paths):
        if not p.exists():
            raise HfAttnError(f"{p} does not exist; pass run folders or folders that contain them.")
        folders = [p] if (p / "config.yaml").is_file() else sorted(c.parent for c in p.rglob("config.yaml"))
        found += [read_run(f) for f in folders if (f / "metrics.csv").is_file()]
    if not found:
        raise HfAttnError(f"No run folders (config.yaml + metrics.csv) under {', '.join(map(str, paths))}.")
    return found


def variant_label(config: dict[str, Any]) -> str:
    """`holo`, `sdpa+tt(rank=16)`: the attention and wrapper a run trained, as the report names it."""
    model = config.get("model", {})
    label = model.get("attention", "sdpa")
    wrapper = model.get("wrapper")
    if wrapper:
        knobs = ",".join(f"{k}={v}" for k, v in wrapper.items() if k in ("rank", "num_experts", "k"))
        label += f"+{wrapper['type']}" + (f"({knobs})" if knobs else "")
    return label


def summarize(run: Run) -> dict[str, Any]:
    """One row per run: what it was and how it did (final held-out quality, median tokens/s, peak memory)."""
    cfg, model = run.config, run.config.get("model", {})
    metric = run.info.get("quality_metric", "eval_loss")
    wrapper = model.get("wrapper") or {}
    return {
        "run": run.name,
        "path": str(run.path),
        "task": cfg.get("task"),
        "pretrained": bool(model.get("model_path")),
        "variant": variant_label(cfg),
        "attention": model.get("attention"),
        "wrapper": wrapper.get("type"),
        "rank": wrapper.get("rank"),
        "seq_len": cfg.get("data", {}).get("seq_len"),
        "data": run.info.get("data", ""),
        "device": run.info.get("gpu") or run.info.get("device"),
        "memory_kind": run.info.get("memory_kind"),
        "steps": run.metrics[-1]["step"] if run.metrics else 0,
        "finished": bool(run.final),
        "eval_loss": run.last("eval_loss"),
        "quality_metric": metric,
        "quality": run.last(metric),
        "tokens_per_s": run.median("tokens_per_s"),
        "peak_mem_mb": max((r["peak_mem_mb"] for r in run.metrics if r.get("peak_mem_mb") is not None), default=None),
        "params_trainable": run.info.get("params_trainable"),
    }
