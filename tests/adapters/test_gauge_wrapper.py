"""The learned gauge wrapper: starts at the parameter-free form, passes the harness, saves, loads, unwraps."""
import pytest
import torch

import hf_attn
from harness import (
    cache_gap,
    future_leak,
    ids,
    logits,
    padding_gap,
    recording,
    tiny_model,
    visible_from_call,
    wrapper_round_trip,
)
from references import gauge_reference

START_TOLERANCE = 1e-4  # documented: wrapped logits at init vs the parameter-free form (fp32)


def _wrapped(arch, **cfg):
    return hf_attn.wrap(tiny_model(arch, "sdpa"), hf_attn.GaugeConfig(**cfg))


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_starts_at_the_parameter_free_form_with_base_frozen(arch):
    x = ids(2, 9)
    with torch.no_grad():
        free = logits(tiny_model(arch, "gauge"), x)
        model = _wrapped(arch)
        start = logits(model, x)
    assert (start - free).abs().max() < START_TOLERANCE
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".gauge_maps." in n for n in trainable)
    assert model.config._attn_implementation == "gauge"


@pytest.mark.parametrize("arch", ["llama", "t5"])  # GQA archs: test_wrapped_calls_match_reference (qwen2)
def test_learned_frames_pass_the_harness(arch):
    model = _wrapped(arch, init_std=0.05)
    assert future_leak(model) == 0.0
    assert padding_gap(model, "left") < 1e-4 and padding_gap(model, "right") < 1e-4
    same, gap = cache_gap(model)
    assert same and gap < 1e-4


@pytest.mark.parametrize("mode", ["block", "diagonal"])
def test_wrapped_calls_match_reference(mode):
    model = _wrapped("qwen2", init_std=0.05, variance_mode=mode)
    x = ids(2, 9)
    mask = torch.ones_like(x)
    mask[1, :3] = 0
    maps = {id(m.base_layer): m.gauge_maps for m in model.modules() if hasattr(m, "gauge_maps")}
    with recording("gauge") as calls, torch.no_grad():
        logits(model, x, mask)
    assert len(calls) == 2
    for module, q, k, v, attn_mask, kwargs, out in calls:
        qb, kb = maps[id(module)].beliefs(q, k)
        layout = maps[id(module)].settings.layout
        assert qb.phi.abs().max() > 0
        vis = visible_from_call(module, q, k, attn_mask, kwargs)
        ref = gauge_reference(module, q, k, v, vis, None, kwargs.get("scaling"), phi_q=qb.phi, phi_k=kb.phi,
                              var_q=qb.var_per_dim(layout), var_k=kb.var_per_dim(layout))
        live = vis.any(-1).transpose(1, 2)
        torch.testing.assert_close(out.double()[live], ref[live], rtol=2e-4, atol=5e-5)


def test_gradients_reach_frames_variances_and_unfrozen_base():
    model = _wrapped("llama", freeze_base=False)  # init_std=0: gradients must still leave the identity frames
    x = ids(2, 9)
    model.train()
    model(input_ids=x, labels=x).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for part in ("q_phi.weight", "k_phi.weight", "q_var.weight", "k_var.weight", "q_proj.weight"):
        hits = [g for n, g in grads.items() if n.endswith(part)]
        assert hits and all(g is not None and g.abs().sum() > 0 for g in hits), part


def test_save_load_unwrap_round_trip(tmp_path):
    x = ids(1, 8)
    with torch.no_grad():
        base = logits(tiny_model("llama", "sdpa"), x)
    model = _wrapped("llama", init_std=0.05, irrep_spec="1x1+1x2", kappa=2.0)
    trained, reloaded, unwrapped = wrapper_round_trip(model, tiny_model("llama", "sdpa"), x, tmp_path)
    torch.testing.assert_close(reloaded, trained, rtol=0, atol=0)
    torch.testing.assert_close(unwrapped, base, rtol=0, atol=0)
    assert model.config._attn_implementation == "sdpa"
    assert not any("gauge_maps" in n for n, _ in model.named_parameters())


def test_peft_lora_on_top():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_wrapped("llama", init_std=0.05), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    x = ids(2, 9)
    model(input_ids=x, labels=x).loss.backward()
    lora = [p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]
    assert lora and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)


def test_config_validation_and_targets():
    with pytest.raises(hf_attn.HfAttnError, match="kappa"):
        hf_attn.GaugeConfig(kappa=0)
    with pytest.raises(hf_attn.HfAttnError, match="unknown l"):
        hf_attn.GaugeConfig(irrep_spec="1x9")
    with pytest.raises(hf_attn.HfAttnError, match="variance_mode"):
        hf_attn.GaugeConfig(variance_mode="full")
    with pytest.raises(hf_attn.HfAttnError, match="needs 25 dimensions"):
        _wrapped("llama", irrep_spec="5x2")
    with pytest.raises(hf_attn.HfAttnError, match="not"):
        _wrapped("llama", target_modules=["q_proj"])
    model = _wrapped("t5", target_modules=["SelfAttention"])
    assert sum(1 for m in model.modules() if hasattr(m, "gauge_maps")) == 4  # 2 encoder + 2 decoder layers
    cfg = hf_attn.GaugeConfig(kappa=3.0, irrep_spec="1x2")
    assert hf_attn.adapters.WrapperConfig.from_dict(cfg.to_dict()) == cfg
