"""Resume never unpickles code, and every run ends with RUN/final: reloadable with from_pretrained, pushable with
`hf-attn push RUN`, and, fetched by repo id in a fresh process, the same logits as the end of training."""
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

import hf_attn
from hf_attn import HfAttnError
from hf_attn.cli import main
from hf_attn.harness.prune import load_trained
from hf_attn.train import train
from hf_attn.train.checkpoint import STATE_FILE, latest_checkpoint
from hub_server import client_env
from train_cases import tiny_cfg
import toy_wrapper  # noqa: F401  (registers the test_scale wrapper)

COPY = dict(task="copy", model={"attention": "holo", "wrapper": {"type": "test_scale", "init": 1.0, "freeze_base": False}})


class Marker:
    """Unpickling an instance calls `open(path, 'w')`: proof that a crafted checkpoint file ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def copy_ids() -> torch.Tensor:
    return torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(3))


def trained_logits(run_dir) -> torch.Tensor:
    """Logits of the model as training left it: rebuilt from config.yaml + the last resume checkpoint (not final/)."""
    _, _, _, model = load_trained(run_dir)
    with torch.no_grad():
        return model(input_ids=copy_ids()).logits


@pytest.fixture
def stopped_run(tmp_path):
    """A run stopped at step 2 of 4 with its checkpoint, ready for `--resume`."""
    common = dict(task="copy", model={"attention": "performer"}, train={"steps": 4, "save_every": 2})
    cfg = tiny_cfg(tmp_path, **{**common, "train": {**common["train"], "stop_at": 2}})
    train(cfg)
    return tiny_cfg(tmp_path, **common)


def test_checkpoint_keeps_trainer_state_as_json_without_custom_pickles(stopped_run):
    folder = latest_checkpoint(stopped_run.run_dir)
    state = json.loads((folder / STATE_FILE).read_text())
    assert state["step"] == 2 and state["scheduler"]["last_epoch"] == 2
    assert not list(folder.glob("custom_checkpoint_*"))


@pytest.mark.parametrize("name, match", [
    ("custom_checkpoint_0.pkl", "never loads such pickles"),
    ("random_states_0.pkl", "was not unpickled"),
    ("optimizer.bin", "was not unpickled"),
])
def test_crafted_pickle_in_checkpoint_is_never_executed(stopped_run, tmp_path, name, match):
    marker = tmp_path / "pwned"
    torch.save(Marker(marker), latest_checkpoint(stopped_run.run_dir) / name)
    with pytest.raises(HfAttnError, match=match):
        train(stopped_run, resume=True)
    assert not marker.exists()


def test_final_reloads_with_trained_variant_wrapper_and_eval(tmp_path):
    cfg = tiny_cfg(tmp_path, **COPY)
    final = train(cfg)
    folder = cfg.run_dir / "final"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "hf_attn_llama" and config["hf_attn_variant"] == "holo"
    assert config["hf_attn_wrapper"]["wrapper_type"] == "test_scale"
    results = json.loads((folder / "eval_results.json").read_text())
    assert results["eval_loss"] == final["eval_loss"] and results["step"] == 2
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config._attn_implementation == "holo" and model.hf_attn_wrapper.config.wrapper_type == "test_scale"
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=copy_ids()).logits, trained_logits(cfg.run_dir), rtol=0, atol=0)


def test_recovery_run_final_carries_the_tokenizer(tmp_path, tiny_pretrained):
    cfg = tiny_cfg(tmp_path, task="token", data={"corpus": "wiki", "max_chars": 20000, "seq_len": 16},
                   model={"model_path": str(tiny_pretrained), "attention": "performer", "freeze_base": True,
                          "trainable": ["q_proj"]})
    train(cfg)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(cfg.run_dir / "final")("hello").input_ids
    model = AutoModelForCausalLM.from_pretrained(cfg.run_dir / "final")
    _, _, _, trained = load_trained(cfg.run_dir)
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x).logits, trained(input_ids=x).logits, rtol=0, atol=0)


RELOAD = """
import sys, torch
import hf_attn, toy_wrapper
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(3))
with torch.no_grad():
    torch.save({"logits": model(input_ids=ids).logits, "attn": model.config._attn_implementation}, sys.argv[2])
"""


def test_train_push_run_folder_reload_by_repo_id_in_fresh_process(hub, tmp_path, capsys):
    cfg = tiny_cfg(tmp_path, **COPY)
    train(cfg)
    args = ["push", str(cfg.run_dir), "--repo-id", "user/trained-holo", "--endpoint", hub.url, "--token", hub.token]
    assert main(args) == 0, capsys.readouterr().err
    files = hub.files("user/trained-holo")
    assert {"config.json", "model.safetensors", "hf_attn_wrapper.safetensors", "eval_results.json"} <= set(files)
    assert not any(f.endswith((".bin", ".pkl")) for f in files)  # resume state stays home
    assert b"eval_loss" in files["README.md"]
    (tmp_path / "reload.py").write_text(RELOAD)
    proc = subprocess.run([sys.executable, str(tmp_path / "reload.py"), "user/trained-holo", str(tmp_path / "out.pt")],
                          env=client_env(hub, tmp_path / "home"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert out["attn"] == "holo"
    torch.testing.assert_close(out["logits"], trained_logits(cfg.run_dir), rtol=0, atol=0)


def test_push_of_a_stopped_run_says_how_to_finish_it(stopped_run, tmp_path):
    from hf_attn.train.__main__ import main as train_main

    with pytest.raises(HfAttnError, match="training run without final/") as info:
        hf_attn.push_to_hub(stopped_run.run_dir, "user/stopped", dry_run=tmp_path / "dry")
    command = str(info.value).split("python -m hf_attn.train ")[1].split()
    assert train_main(command) == 0  # the advice works as printed
    dry = hf_attn.push_to_hub(stopped_run.run_dir, "user/stopped", dry_run=tmp_path / "dry")
    assert json.loads((dry / "eval_results.json").read_text())["step"] == 4
