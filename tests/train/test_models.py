"""The optimizer groups the trainer builds: one default group, or the wrapper config's own groups first."""
import pytest
import torch

import hf_attn
from hf_attn.train.models import param_groups
from harness import tiny_model


def test_without_a_wrapper_every_trainable_parameter_is_one_group():
    model = tiny_model("llama", "sdpa")
    model.lm_head.weight.requires_grad_(False)
    (group,) = param_groups(model, 1e-3)
    assert group["lr"] == 1e-3 and len(group["params"]) == sum(p.requires_grad for p in model.parameters())


def test_field_modulator_groups_follow_the_note():
    config = hf_attn.FieldModulatorConfig(gradient_scale=0.1)
    model = hf_attn.wrap(tiny_model("llama", "sdpa"), config)
    groups = param_groups(model, 1e-2)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 5e-3, 1e-2])  # experts, alphas, gates; base frozen
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable


def test_wrapper_groups_leave_the_rest_at_the_base_lr_and_refuse_duplicates(monkeypatch):
    config = hf_attn.PrismaticConfig(freeze_base=False, router_lr_scale=10.0)
    model = hf_attn.wrap(tiny_model("llama", "sdpa"), config)
    routers, rest = param_groups(model, 1e-4)
    assert routers["lr"] == pytest.approx(1e-3) and rest["lr"] == 1e-4
    assert len(routers["params"]) + len(rest["params"]) == sum(p.requires_grad for p in model.parameters())
    first = next(model.parameters())
    monkeypatch.setattr(type(config), "param_groups", lambda self, m, lr: [{"params": [first, first], "lr": lr}])
    with pytest.raises(hf_attn.HfAttnError, match="twice"):
        param_groups(model, 1e-4)
