"""Every registered variant on every architecture (tiny random Llama/Qwen2/Qwen3/Mistral/T5)."""
import pytest
import torch

import hf_attn
from harness import (
    ARCHS,
    cache_gap,
    future_leak,
    ids,
    logits,
    padding_gap,
    qkv_grads,
    recording,
    tiny_model,
    visible_from_call,
)
from references import REFERENCES

VARIANTS = sorted(hf_attn.list_variants())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_calls_match_reference(variant, arch):
    """Inputs as each model really passes them (GQA, RoPE'd q/k, T5 position_bias, padding, cross-attention)."""
    model = tiny_model(arch, variant)
    x = ids(2, 9)
    mask = torch.ones_like(x)
    mask[1, :3] = 0
    with recording(variant) as calls, torch.no_grad():
        logits(model, x, mask)
    assert calls, "the model never called the registered attention function"
    for module, q, k, v, attn_mask, kwargs, out in calls:
        vis = visible_from_call(module, q, k, attn_mask, kwargs)
        ref = REFERENCES[variant](module, q, k, v, vis, kwargs.get("position_bias"), kwargs.get("scaling"))
        live = vis.any(-1).transpose(1, 2)
        torch.testing.assert_close(out.double()[live], ref[live], rtol=2e-4, atol=5e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_no_future_leakage(variant, arch):
    assert future_leak(tiny_model(arch, variant)) == 0.0


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_is_honoured(variant, arch, side):
    assert padding_gap(tiny_model(arch, variant), side) < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_kv_cache_generation_equals_full_forward(variant, arch):
    same, gap = cache_gap(tiny_model(arch, variant))
    assert same and gap < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_forward_is_finite_and_close(variant, arch):
    x = ids(2, 9)
    with torch.no_grad():
        ref = logits(tiny_model(arch, variant), x)
        low = logits(tiny_model(arch, variant, dtype=torch.bfloat16), x)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_qkv(variant, arch):
    norms = qkv_grads(tiny_model(arch, variant))
    assert norms and all(n > 0 and n == n for n in norms.values()), norms


@pytest.mark.parametrize("variant", VARIANTS)
def test_t5_generates(variant):
    model = tiny_model("t5", variant)
    out = model.generate(input_ids=ids(2, 8), max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] > 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_set_attention_switches_a_loaded_model(variant):
    model = tiny_model("llama", "sdpa")
    x = ids(1, 8)
    with torch.no_grad():
        before = model(input_ids=x).logits
        hf_attn.set_attention(model, variant)
        after = model(input_ids=x).logits
    assert model.config._attn_implementation == variant
    assert not torch.allclose(before, after)
