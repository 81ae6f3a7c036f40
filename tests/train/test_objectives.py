"""The conversion objectives: attention transfer (stage 1) and LoRA distillation (stage 2)."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig

import hf_attn
from hf_attn import HfAttnError
from hf_attn.adapters import GaugeConfig, wrap, wrapper_state_dict
from hf_attn.train import train
from hf_attn.train.objectives import TRANSFER_IMPLEMENTATION, kl_to_teacher, transfer_attention
from hf_attn.train.rundir import MetricsCsv
from train_cases import tiny_cfg

def token_cfg(tmp_path, objective: str, model: dict, lr: float):
    """12 steps of token LM data (2 x 32 tokens) with the given objective."""
    return tiny_cfg(tmp_path, task="token", data={"corpus": "wiki", "max_chars": 40000, "seq_len": 32, "batch_size": 2},
                    train={"steps": 12, "log_every": 1, "eval_every": 12, "diag_every": 12, "objective": objective},
                    model=model, optim={"lr": lr, "schedule": "constant"})


def two_layer_gauge():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    wrap(model, GaugeConfig(init_std=1e-2))
    return model


def test_transfer_mode_records_one_mse_per_layer_and_passes_the_teacher_on():
    model = two_layer_gauge()
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with transfer_attention(model, "gauge") as record:
            transferred = model(input_ids=ids).logits
        assert model.config._attn_implementation == "gauge"  # restored
        assert TRANSFER_IMPLEMENTATION not in hf_attn.registry.AttentionInterface._global_mapping
        hf_attn.utils.set_attn_implementation(model, "sdpa")
        softmax = model(input_ids=ids).logits
    assert len(record.losses) == 2 and all(loss > 0 for loss in record.losses)
    # every layer hands the teacher's output on, so the logits are the softmax model's
    torch.testing.assert_close(transferred, softmax)


def test_kl_to_teacher_is_zero_for_equal_logits_and_positive_otherwise():
    a = torch.randn(2, 5, 11)
    assert kl_to_teacher(a, a).abs() < 1e-6
    assert kl_to_teacher(a, torch.randn(2, 5, 11)) > 0.01


def test_transfer_run_loss_falls_and_only_wrapper_tensors_change(tmp_path, smollm2_toy):
    cfg = token_cfg(tmp_path, "transfer", {"model_path": str(smollm2_toy), "attention": "gauge",
                                           "wrapper": {"type": "gauge", "init_std": 0.0}}, lr=3e-2)
    train(cfg)
    losses = [r["loss"] for r in MetricsCsv.load(cfg.run_dir / "metrics.csv") if r.get("loss") is not None]
    assert sum(losses[-3:]) / 3 < 0.8 * losses[0], losses
    base = load_file(smollm2_toy / "model.safetensors")
    final = load_file(cfg.run_dir / "final" / "model.safetensors")
    for name, tensor in base.items():
        torch.testing.assert_close(final[name], tensor, rtol=0, atol=0)
    wrapper = load_file(cfg.run_dir / "final" / "hf_attn_wrapper.safetensors")
    assert all(v.abs().sum() > 0 for k, v in wrapper.items() if k.endswith("weight"))  # init_std 0: they moved
    info = json.loads((cfg.run_dir / "run.json").read_text())
    assert info["objective"] == "transfer" and info["train_tokens_available"] > 5_000
    assert info["train_tokens_seen"] == 12 * 2 * 32


def test_distill_run_kl_falls_lora_merged_base_otherwise_unchanged(tmp_path, smollm2_toy):
    cfg = token_cfg(tmp_path, "distill", {"model_path": str(smollm2_toy), "attention": "performer",
                                          "lora_rank": 4, "lora_targets": ["q_proj", "v_proj"]}, lr=3e-3)
    train(cfg)
    losses = [r["loss"] for r in MetricsCsv.load(cfg.run_dir / "metrics.csv") if r.get("loss") is not None]
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    base = load_file(smollm2_toy / "model.safetensors")
    final = load_file(cfg.run_dir / "final" / "model.safetensors")
    assert set(final) == set(base)  # merged: no lora_A/lora_B tensors, no PEFT prefixes
    changed = {k for k in base if not torch.equal(base[k], final[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed), changed
    model = AutoModelForCausalLM.from_pretrained(cfg.run_dir / "final")
    assert model.config._attn_implementation == "performer"


@pytest.mark.parametrize("change, message", [
    ({"train": {"objective": "distill"}}, "model.lora_rank"),
    ({"train": {"objective": "lm"}, "model": {"lora_rank": 8}}, "'distill' only"),
    ({"train": {"objective": "transfer", "lm_weight": 0.5}}, "lm_weight"),
    ({"train": {"objective": "kl"}}, "train.objective = 'kl' is invalid"),
])
def test_objective_fields_are_validated(tmp_path, tiny_pretrained, change, message):
    model = {"model_path": str(tiny_pretrained), **change.get("model", {})}
    with pytest.raises(HfAttnError, match=message):
        tiny_cfg(tmp_path, task="token", model=model, train=change["train"])


def test_conversion_objectives_need_a_pretrained_model(tmp_path):
    with pytest.raises(HfAttnError, match="model.model_path"):
        tiny_cfg(tmp_path, train={"objective": "transfer"})


def test_transfer_without_learnable_parts_names_the_fix(tmp_path, tiny_pretrained):
    cfg = token_cfg(tmp_path, "transfer", {"model_path": str(tiny_pretrained), "attention": "performer"}, lr=1e-3)
    with pytest.raises(HfAttnError, match="model.wrapper"):
        train(cfg)
