"""Residual and field modulators on tiny T5 / Llama / Qwen2 / Qwen3 / Mistral: identity limits, gradients,
cached generation, save/load/unwrap, a few training steps, initialisations and health."""
import warnings

import pytest
import torch

import hf_attn
from hf_attn.adapters.modulators import (
    FieldModulatorConfig,
    GeometryHealthWarning,
    ResidualModulatorConfig,
    find_modulator,
    modulator_health,
)
from harness import ARCHS, cache_gap, ids, logits, tiny_model

CONFIGS = {"residual": ResidualModulatorConfig, "field": FieldModulatorConfig}


def _wrapped(arch, kind, **kw):
    """Wrapped tiny model and its base logits (both computed without autograd: SDPA on CPU picks a
    different kernel when inputs require grad, which alone moves logits by ~1e-6)."""
    model = tiny_model(arch, "sdpa")
    with torch.no_grad():
        base = logits(model, ids(2, 9))
    hf_attn.wrap(model, CONFIGS[kind](**kw))
    return model, base


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", CONFIGS)
def test_alpha_zero_is_the_base_model_and_unwrap_restores_it(arch, kind):
    kw = {"alpha_min": 0.0} if kind == "field" else {}
    model, base = _wrapped(arch, kind, **kw)
    x = ids(2, 9)
    with torch.no_grad():
        assert (logits(model, x) - base).abs().max() > 1e-4  # the modulator acts at its initial alpha
        find_modulator(model).alpha_logit.fill_(-1e4)  # sigmoid -> exactly 0
        torch.testing.assert_close(logits(model, x), base, rtol=0, atol=0)
        hf_attn.unwrap(model)
        assert not hasattr(model, "hf_attn_modulator")
        assert not any(m._forward_pre_hooks for m in model.modules())
        torch.testing.assert_close(logits(model, x), base, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_field_gates_at_one_are_the_base_model(arch):
    model, base = _wrapped(arch, "field", initial_alpha=0.3)
    with torch.no_grad():
        for gate in find_modulator(model).gates.values():
            gate.weight.zero_()
            gate.bias.fill_(100.0)  # sigmoid -> 1 in fp32
    with torch.no_grad():
        torch.testing.assert_close(logits(model, ids(2, 9)), base, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("position", ["tail", "random"])
def test_field_null_space_is_untouched(position):
    model, _ = _wrapped("llama", "field", initial_alpha=0.3, null_space_position=position)
    mod = find_modulator(model)
    h = torch.randn(2, 5, 64)
    out = mod(h, 0)
    null = torch.ones(64, dtype=torch.bool)
    null[mod.active_idx] = False
    assert int(null.sum()) == 16
    torch.testing.assert_close(out[..., null], h[..., null], rtol=0, atol=0)
    assert (out[..., ~null] - h[..., ~null]).abs().max() > 1e-4
    alphas = mod.alphas()
    assert alphas.shape == (2, 3) and alphas.min() >= 0.001 and alphas.max() <= 0.35
    with torch.no_grad():
        mod.alpha_logit.fill_(10.0)
    assert mod.alphas().max().item() == pytest.approx(0.35)


@pytest.mark.parametrize("arch", ["qwen2", "t5"])
@pytest.mark.parametrize("kind", CONFIGS)
def test_gradients_reach_only_the_modulator(arch, kind):
    model, _ = _wrapped(arch, kind)
    model.train()
    x = ids(2, 9)
    kw = {"labels": ids(2, 5, seed=6)} if arch == "t5" else {"labels": x}
    model(input_ids=x, **kw).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(n.startswith("hf_attn_modulator.") for n in with_grad)
    assert find_modulator(model).alpha_logit.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["llama", "qwen3", "t5"])
@pytest.mark.parametrize("kind", CONFIGS)
def test_cached_generation_equals_full_forward(arch, kind):
    model, _ = _wrapped(arch, kind, initial_alpha=0.2)
    same, gap = cache_gap(model)
    assert same and gap < 1e-4


@pytest.mark.parametrize("kind", CONFIGS)
def test_save_load_round_trip(kind, tmp_path):
    model, _ = _wrapped("t5", kind, target_modules=["encoder.block.1", "decoder.block.0"])
    mod = find_modulator(model)
    assert mod.layer_names == ["encoder.block.1", "decoder.block.0"]
    with torch.no_grad():
        for p in mod.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = ids(2, 9)
    expected = logits(model, x)
    hf_attn.save_wrapper(model, tmp_path)
    reloaded = hf_attn.load_wrapper(tiny_model("t5", "sdpa"), tmp_path)
    assert type(reloaded.hf_attn_wrapper.config) is CONFIGS[kind]
    torch.testing.assert_close(logits(reloaded, x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("kind", CONFIGS)
def test_t5_trains_and_loss_falls(kind):
    model, _ = _wrapped("t5", kind, initial_alpha=0.05)
    mod = find_modulator(model)
    groups = mod.param_groups(3e-2) if kind == "field" else [{"params": list(mod.parameters()), "lr": 3e-2}]
    opt = torch.optim.Adam(groups)
    x, y = ids(4, 10), ids(4, 6, seed=7)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(input_ids=x, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    health = modulator_health(model, warn=False)
    assert health["alpha_mean"] != pytest.approx(0.05)
    if kind == "field":
        assert 0 < health["validity/k4"] <= 1


def test_health_metrics_and_band_warning():
    model, _ = _wrapped("llama", "residual", cv_band=(0.0, 0.01))
    logits(model, ids(2, 9))
    with pytest.warns(GeometryHealthWarning, match="outside the band"):
        health = modulator_health(model)
    for key in ("alpha/model.layers.0", "alpha/model.layers.1", "cv/geometry", "pr/geometry", "cv/states", "pr/states"):
        assert key in health
    assert health["cv_in_band"] == 0.0
    assert 1 <= health["pr/states"] <= 64
    model2, _ = _wrapped("llama", "residual", cv_band=(0.0, 10.0))
    logits(model2, ids(2, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert modulator_health(model2)["cv_in_band"] == 1.0


def test_residual_initialisations():
    model, _ = _wrapped("llama", "residual", n_geometric_dims=8)
    mod = find_modulator(model)
    # Relational target of rank 8 is reproduced exactly by 8-d rows.
    basis = torch.nn.functional.normalize(torch.randn(30, 8, dtype=torch.float64), dim=-1)
    corr = mod.init_from_relational_target(basis @ basis.T, token_ids=torch.arange(30))
    assert corr == pytest.approx(1.0, abs=1e-6)
    # Procrustes: a source that is an exact rotation of the target aligns perfectly.
    target = torch.randn(40, 64, dtype=torch.float64) @ torch.diag(torch.linspace(3, 0.1, 64, dtype=torch.float64))
    q, _ = torch.linalg.qr(torch.randn(64, 64, dtype=torch.float64))
    cos = mod.init_procrustes(target @ q, target, torch.arange(40, 80))
    assert cos == pytest.approx(1.0, abs=1e-6)
    # Simplices: sum-pooled, unit rows; degenerate ones refused.
    verts = torch.randn(5, 3, 8)
    vols = mod.init_from_simplices(verts, token_ids=torch.arange(5))
    assert (vols > 0).all()
    torch.testing.assert_close(mod.geometric_embed.weight[:5], torch.nn.functional.normalize(verts.sum(1), dim=-1))
    with pytest.raises(hf_attn.HfAttnError, match="degenerate"):
        mod.init_from_simplices(torch.zeros(2, 3, 8), token_ids=torch.arange(2))


def test_clear_errors():
    with pytest.raises(hf_attn.HfAttnError, match="alpha_min < alpha_max"):
        FieldModulatorConfig(alpha_min=0.5, alpha_max=0.2)
    with pytest.raises(hf_attn.HfAttnError, match="expert_edim"):
        FieldModulatorConfig(expert_ks=(1, 9))
    with pytest.raises(hf_attn.HfAttnError, match="initial_alpha"):
        ResidualModulatorConfig(initial_alpha=1.0)
    with pytest.raises(hf_attn.HfAttnError, match="names no transformer block"):
        hf_attn.wrap(tiny_model("llama", "sdpa"), ResidualModulatorConfig(target_modules=["q_proj"]))
    model, _ = _wrapped("llama", "residual")
    with pytest.raises(hf_attn.HfAttnError, match="input_ids"):
        model(inputs_embeds=torch.randn(1, 4, 64))
    with pytest.raises(hf_attn.HfAttnError, match="no stack of transformer blocks"):
        hf_attn.wrap(torch.nn.Sequential(torch.nn.Linear(2, 2)), FieldModulatorConfig())


def test_peft_lora_on_top_trains_both():
    from peft import LoraConfig, get_peft_model

    model, _ = _wrapped("llama", "residual")
    peft_model = get_peft_model(model, LoraConfig(target_modules=["q_proj"], r=4))
    for p in find_modulator(peft_model).parameters():  # PEFT freezes everything but LoRA; re-enable ours
        p.requires_grad_(True)
    x = ids(2, 9)
    peft_model(input_ids=x, labels=x).loss.backward()
    with_grad = {n for n, p in peft_model.named_parameters() if p.grad is not None}
    assert any("lora_A" in n for n in with_grad) and any("hf_attn_modulator.alpha_logit" in n for n in with_grad)
