"""Every registered variant on every architecture (tiny random Llama/Qwen2/Qwen3/Mistral/T5)."""
import pytest
import torch

import hf_attn
from harness import (
    ARCHS,
    assert_bf16_close,
    assert_calls_match,
    cache_gap,
    future_leak,
    ids,
    logits,
    padding_gap,
    qkv_grads,
    tiny_model,
)
from references import REFERENCES

VARIANTS = sorted(hf_attn.list_variants())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_calls_match_reference(variant, arch):
    """Inputs as each model really passes them (GQA, RoPE'd q/k, T5 position_bias, padding, cross-attention)."""
    x = ids(2, 9)
    mask = torch.ones_like(x)
    mask[1, :3] = 0
    assert_calls_match(tiny_model(arch, variant), variant, REFERENCES[variant], x, mask)


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
    assert_bf16_close(lambda dtype: tiny_model(arch, variant, dtype=dtype), ids(2, 9))


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
