"""Atomic checkpoints on top of `Accelerator.save_state` (model as safetensors, optimizer, scheduler, RNG).

A checkpoint is written into `checkpoints/.tmp-step_N/`, completed with `trainer_state.json`, renamed to
`checkpoints/step_N/` in one `os.replace`, and only then named in `checkpoints/latest`. A run killed at any
moment leaves either the previous checkpoint or the new one, never a half-written folder that resume would
read. Because batches are a pure function of the step and RNG states are restored, resume is bit-for-bit.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..utils import HfAttnError, write_text_atomic

STATE_FILE = "trainer_state.json"
LATEST = "latest"


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _write_state(accelerator, folder: Path) -> None:
    accelerator.save_state(str(folder), safe_serialization=True)


def save_checkpoint(accelerator, run_dir: Path, step: int, keep: int) -> Path:
    """Write checkpoint `step` atomically on all processes; returns its folder."""
    root = checkpoint_root(run_dir)
    name = f"step_{step:07d}"
    tmp, final = root / f".tmp-{name}", root / name
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    _write_state(accelerator, tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step}))
        if final.exists():  # re-saving a step after resume: move the old one aside first
            old = root / f".old-{name}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            shutil.rmtree(old)
        os.replace(tmp, final)
        write_text_atomic(root / LATEST, name)
        for stale in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = checkpoint_root(run_dir)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    if not (folder / STATE_FILE).is_file():
        raise HfAttnError(f"{pointer} names {folder.name}, which is incomplete or missing; delete {pointer} to start over.")
    return folder


def restore_checkpoint(accelerator, run_dir: Path) -> int:
    """Load the newest checkpoint into the prepared objects; returns its step (0 when there is none)."""
    folder = latest_checkpoint(run_dir)
    if folder is None:
        return 0
    if accelerator.is_main_process:
        for leftover in checkpoint_root(run_dir).glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    accelerator.load_state(str(folder))
    return int(json.loads((folder / STATE_FILE).read_text())["step"])
