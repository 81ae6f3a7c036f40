"""Atomic resume checkpoints on top of `Accelerator.save_state`, and the exported model `run/final/`.

A checkpoint is written into `checkpoints/.tmp-step_N/`, completed with `trainer_state.json`, renamed to
`checkpoints/step_N/` in one `os.replace`, and only then named in `checkpoints/latest`. A run killed at any
moment leaves either the previous checkpoint or the new one, never a half-written folder that resume would
read. Because batches are a pure function of the step and RNG states are restored, resume is bit-for-bit.

What resume reads, and why none of it runs code: the model is safetensors; the LR schedule's state is JSON
in `trainer_state.json` (no objects are registered with accelerate, so it writes no
`custom_checkpoint_*.pkl`, which `Accelerator.load_state` would unpickle with `weights_only=False`); the
optimizer and RNG states are accelerate's pickles, which it loads with `weights_only=True` (tensors, numbers
and numpy arrays only). A checkpoint holding a `custom_checkpoint_*.pkl` is refused before anything loads.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

from ..utils import HfAttnError, atomic_dir, write_text_atomic
from .rundir import EVAL_FILE, FINAL_DIR, write_error

STATE_FILE = "trainer_state.json"
LATEST = "latest"
UNSAFE_PICKLES = "custom_checkpoint_*.pkl"


def checkpoint_root(run_dir: Path) -> Path:
    """The folder that holds a run's resumable checkpoints."""
    return Path(run_dir) / "checkpoints"


def _write_state(accelerator, folder: Path) -> None:
    accelerator.save_state(str(folder), safe_serialization=True)


def save_checkpoint(accelerator, run_dir: Path, step: int, keep: int, scheduler) -> Path:
    """Write checkpoint `step` atomically on all processes; returns its folder."""
    root = checkpoint_root(run_dir)
    name = f"step_{step:07d}"
    tmp, final = root / f".tmp-{name}", root / name
    with write_error(f"writing the checkpoint of step {step}", tmp):
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        _write_state(accelerator, tmp)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"step": step, "scheduler": scheduler.state_dict()}
            write_text_atomic(tmp / STATE_FILE, json.dumps(state))
            _publish(root, tmp, final, keep)
    accelerator.wait_for_everyone()
    return final


def _publish(root: Path, tmp: Path, final: Path, keep: int) -> None:
    """Main process: rename the completed checkpoint into place, point `latest` at it, drop old ones."""
    if final.exists():  # re-saving a step after resume: move the old one aside first
        old = root / f".old-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        shutil.rmtree(old)
    os.replace(tmp, final)
    write_text_atomic(root / LATEST, final.name)
    for stale in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(stale)


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


def _refuse_unsafe_pickles(folder: Path) -> None:
    """A pickle accelerate would load with `weights_only=False` can run any code: never let it reach load_state."""
    found = sorted(p.name for p in folder.glob(UNSAFE_PICKLES))
    if found:
        raise HfAttnError(
            f"{folder} holds {', '.join(found)}: hf-attn never loads such pickles (unpickling them can run arbitrary "
            "code). The trainer keeps its own state in trainer_state.json; an older hf-attn kept the LR schedule in "
            "custom_checkpoint_0.pkl. If you wrote this checkpoint yourself with an older hf-attn, start the run again "
            "into a new --out_dir; otherwise delete the file and do not trust the folder."
        )
    from accelerate.utils import load

    for rng in sorted(folder.glob("random_states_*.pkl")):  # accelerate skips an unreadable one silently
        _checked(load, rng)


def _checked(load_fn, path: Path):
    """Run a `weights_only=True` load, naming the file when it holds something other than plain data."""
    try:
        return load_fn(path)
    except pickle.UnpicklingError as err:
        raise HfAttnError(
            f"{path} holds objects other than tensors and plain data, so it was not unpickled (that could run "
            "arbitrary code). The checkpoint was not written by hf-attn's trainer or was altered: delete "
            f"{path.parent} and resume from an older checkpoint, or start the run again."
        ) from err


def restore_checkpoint(accelerator, run_dir: Path, scheduler) -> int:
    """Load the newest checkpoint into the prepared objects; returns its step (0 when there is none)."""
    folder = latest_checkpoint(run_dir)
    if folder is None:
        return 0
    _refuse_unsafe_pickles(folder)
    if accelerator.is_main_process:
        for leftover in checkpoint_root(run_dir).glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    _checked(lambda f: accelerator.load_state(str(f)), folder)
    state = json.loads((folder / STATE_FILE).read_text())
    if "scheduler" not in state:
        raise HfAttnError(f"{folder / STATE_FILE} has no LR schedule state (written by an older hf-attn, which kept it "
                          "in a pickle); start the run again into a new --out_dir.")
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


def save_final(accelerator, model, run_dir: Path, results: dict, tokenizer=None) -> Path:
    """Export the trained model to `run/final/` (all processes call; the main process writes).

    `hf_attn.save_pretrained` format, so `from_pretrained(run/final)` (after `import hf_attn`) and
    `hf-attn push run` give the trained weights with the trained attention and wrapper; the held-out
    results go beside config.json as `eval_results.json` (the model card's Evaluation section).
    """
    from ..modeling import save_pretrained

    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # a collective under FSDP: gathers the full weights
    folder = Path(run_dir) / FINAL_DIR
    if accelerator.is_main_process:
        with write_error("exporting the trained model", folder), atomic_dir(folder, drop=("*",)) as tmp:
            save_pretrained(accelerator.unwrap_model(model), tmp, state_dict=state_dict)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            write_text_atomic(tmp / EVAL_FILE, json.dumps(results, indent=2, sort_keys=True) + "\n")
    accelerator.wait_for_everyone()
    return folder
