"""Two-step CPU runs of every recipe kind, exact resume, multi-process agreement, no half-written checkpoints."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import hf_attn
from hf_attn import HfAttnError
from hf_attn.train import checkpoint, train
from hf_attn.train.rundir import METRIC_COLUMNS, MetricsCsv, read_run
from train_cases import REPO, tiny_cfg
import toy_wrapper  # noqa: F401  (registers the test_scale wrapper)


def check_run_folder(path, steps=2):
    run = read_run(path)
    assert list(MetricsCsv.load(path / "metrics.csv")[0]) == METRIC_COLUMNS
    assert run.metrics[-1]["step"] == steps and run.metrics[-1]["eval_loss"] is not None
    assert run.metrics[-1]["tokens_per_s"] > 0 and run.metrics[-1]["peak_mem_mb"] > 0
    assert run.final["step"] == steps and run.info["data"]
    assert (path / "checkpoints" / f"step_{steps:07d}" / "model.safetensors").is_file()
    assert (path / "final" / "config.json").is_file() and (path / "final" / "eval_results.json").is_file()
    return run


def test_copy_run_writes_folder_with_entropies(tmp_path):
    cfg = tiny_cfg(tmp_path, task="copy", model={"attention": "holo"})
    train(cfg)
    run = check_run_folder(cfg.run_dir)
    ent = run.diagnostics[-1]["head_entropy"]
    assert len(ent["entanglement"]) == 1 and len(ent["entanglement"][0]) == 2
    assert run.metrics[-1]["eval_acc"] is not None


def test_char_run_sdpa_diagnostics_via_eager(tmp_path, corpus):
    cfg = tiny_cfg(tmp_path, task="char", data={"corpus": str(corpus)}, model={"attention": "sdpa"},
                   optim={"grad_accum": 2, "schedule": "linear", "warmup_steps": 1})
    train(cfg)
    run = check_run_folder(cfg.run_dir)
    assert run.metrics[-1]["eval_bpc"] > 0 and "entanglement" in run.diagnostics[-1]["head_entropy"]
    assert run.info["tokens_per_step"] == 2 * 17 * 2


def test_recovery_run_frozen_base_with_wrapper(tmp_path, tiny_pretrained):
    cfg = tiny_cfg(tmp_path, task="token", data={"corpus": "wiki", "max_chars": 20000, "seq_len": 16},
                   model={"model_path": str(tiny_pretrained), "attention": "performer", "freeze_base": True,
                          "trainable": ["q_proj"], "wrapper": {"type": "test_scale", "init": 1.0}})
    train(cfg)
    run = check_run_folder(cfg.run_dir)
    assert run.metrics[-1]["eval_ppl"] > 1
    assert run.info["params_trainable"] == 32 * 32 + 16  # q_proj weight + scale of v_proj (1 kv head x 16)
    assert any(k.endswith("v_proj") for k in run.diagnostics[-1])  # the wrapper's own diagnostics hook


def test_nothing_trainable_is_an_error(tmp_path, tiny_pretrained):
    cfg = tiny_cfg(tmp_path, task="token", data={"max_chars": 20000},
                   model={"model_path": str(tiny_pretrained), "freeze_base": True})
    with pytest.raises(HfAttnError, match="Nothing to train"):
        train(cfg)


def test_non_finite_loss_stops_the_run_with_a_clear_error(tmp_path, monkeypatch):
    """A NaN loss (seen: performer on SmolLM2 before its stabiliser fix) must not train on for hundreds of steps."""
    real = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **kw: real(*a, **kw) * float("nan"))
    cfg = tiny_cfg(tmp_path, task="copy")
    with pytest.raises(HfAttnError, match="training loss is nan at step 1; stopping"):
        train(cfg)


def test_resume_reproduces_uninterrupted_losses_exactly(tmp_path):
    common = dict(task="copy", model={"attention": "performer"}, train={"steps": 4, "save_every": 2})
    full = tiny_cfg(tmp_path / "a", **common)
    train(full)
    part = tiny_cfg(tmp_path / "b", **{**common, "train": {"steps": 4, "save_every": 2, "stop_at": 2}})
    assert train(part)["stopped"]
    with pytest.raises(HfAttnError, match="--resume"):
        train(tiny_cfg(tmp_path / "b", **common))
    resumed = train(tiny_cfg(tmp_path / "b", **common), resume=True)
    a, b = read_run(full.run_dir).metrics, read_run(part.run_dir).metrics
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for col in ("loss", "lr", "grad_norm", "eval_loss"):
        assert [r[col] for r in a] == [r[col] for r in b], col
    assert resumed["param_checksums"] == json.loads((full.run_dir / "final.json").read_text())["param_checksums"]


def test_killed_checkpoint_leaves_previous_intact(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path, task="copy", train={"steps": 4, "save_every": 2})
    real = checkpoint._write_state

    def killed(accelerator, folder):
        real(accelerator, folder)
        if "step_0000004" in str(folder):
            (folder / "model.safetensors").write_bytes(b"torn")
            raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(checkpoint, "_write_state", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    root = cfg.run_dir / "checkpoints"
    assert (root / "latest").read_text() == "step_0000002"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_0000002"]
    assert all((p / checkpoint.STATE_FILE).is_file() for p in root.glob("step_*"))
    monkeypatch.setattr(checkpoint, "_write_state", real)
    assert train(cfg, resume=True)["step"] == 4
    assert not list(root.glob(".tmp-*"))


@pytest.mark.timeout(300)
def test_accelerate_launch_two_cpu_processes_agree(tmp_path):
    out = tmp_path / "mp"
    with socket.socket() as s:  # a free rendezvous port: the default 29500 may be taken by another launch
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "recipes/accelerate/multi_gpu.yaml"),
           "--num_processes", "2", "--main_process_port", port, "-m", "hf_attn.train", "--config", str(REPO / "recipes/train/copy_holo.yaml"),
           "--set", "train.steps=2", "--set", "data.batch_size=2", "--set", "model.num_layers=1",
           "--set", "model.hidden_size=32", "--set", "data.seq_len=17", "--set", "data.eval_batches=2", "--out_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = read_run(out)
    assert run.info["processes"] == 2 and run.info["distributed"] == "MULTI_CPU"
    a, b = run.final["param_checksums"]
    assert a == b
    from transformers import AutoModelForCausalLM

    from hf_attn.train.loop import param_checksum

    exported = AutoModelForCausalLM.from_pretrained(out / "final")  # written once, by rank 0
    assert exported.config._attn_implementation == "holo" and param_checksum(exported) == a
    assert not list(out.glob(".final.*"))
    assert run.info["tokens_per_step"] == 2 * 17 * 2
