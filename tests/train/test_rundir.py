"""The run folder under faults: a full disk or read-only folder gives a clear error and loses nothing, and two
trainings never write into one folder at once (hf_attn/train/rundir.py)."""
import errno
import os
import subprocess
import sys

import pytest

from hf_attn import HfAttnError
from hf_attn.train import checkpoint, rundir, train
from hf_attn.train.rundir import read_run, run_lock
from train_cases import tiny_cfg


def failing(code: int):
    def write(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return write


@pytest.mark.parametrize("module, name, code, where, fix, latest", [
    (rundir, "write_text_atomic", errno.EROFS, "config.yaml", "read-only", 2),
    (checkpoint, "_write_state", errno.ENOSPC, ".tmp-step_0000004", "disk is full", 2),
    (checkpoint, "atomic_dir", errno.ENOSPC, "final", "disk is full", 4),
])
def test_write_fault_is_a_clear_error_and_keeps_earlier_files(tmp_path, monkeypatch, module, name, code, where, fix,
                                                              latest):
    """Tests run as root, where chmod cannot make a folder read-only: the write itself raises the OSError."""
    cfg = tiny_cfg(tmp_path, task="copy", train={"steps": 4, "save_every": 2, "stop_at": 2})
    train(cfg)  # a healthy first half: metrics and the step-2 checkpoint exist
    before = (cfg.run_dir / "metrics.csv").read_text()
    monkeypatch.setattr(module, name, failing(code))
    with pytest.raises(HfAttnError, match=f"(?s){fix}.*--resume") as info:
        train(tiny_cfg(tmp_path, task="copy", train={"steps": 4, "save_every": 2}), resume=True)
    assert where in str(info.value) and str(cfg.run_dir) in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert (cfg.run_dir / "metrics.csv").read_text().startswith(before)
    assert checkpoint.latest_checkpoint(cfg.run_dir).name == f"step_{latest:07d}"
    assert not (cfg.run_dir / "final").exists()
    monkeypatch.undo()
    assert train(tiny_cfg(tmp_path, task="copy", train={"steps": 4, "save_every": 2}), resume=True)["step"] == 4
    assert read_run(cfg.run_dir).metrics[-1]["step"] == 4


def test_second_training_in_the_same_process_fails_at_once(tmp_path):
    cfg = tiny_cfg(tmp_path, task="copy")
    with run_lock(cfg.run_dir):
        with pytest.raises(HfAttnError, match=f"{cfg.run_dir} is in use by another training \\(pid {os.getpid()}"):
            train(cfg)
    assert not (cfg.run_dir / "metrics.csv").exists()  # nothing of the refused run was written
    assert train(cfg)["step"] == 2  # released with its holder


HOLD = "import sys; from hf_attn.train.rundir import run_lock\nwith run_lock(sys.argv[1]):\n    print('locked', flush=True); sys.stdin.read()\n"


def test_second_training_while_another_process_trains_fails_naming_its_pid(tmp_path):
    cfg = tiny_cfg(tmp_path, task="copy")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(cfg.run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(HfAttnError, match=f"in use by another training \\(pid {holder.pid} holds"):
            train(cfg)
    finally:
        holder.communicate("", timeout=60)
    assert train(cfg)["step"] == 2
