"""holo/performer/gauge under `torch.autocast`, the way sdpa runs there (mixed precision training recipes).

Inside an autocast region the variants take q/k/v in the autocast dtype (as autocast casts sdpa's inputs),
return that dtype, and keep their own fp32 accumulation; outside it mixed dtypes stay an error.
"""
from types import SimpleNamespace
from unittest import mock

import pytest
import torch

import hf_attn
from hf_attn import kernels
from hf_attn.attention.holo import attention as holo
from hf_attn.attention.performer import attention as performer
from harness import ids, recording, tiny_model

VARIANTS = ["gauge", "holo", "performer"]
# bf16 keeps 8 significant bits (relative rounding 2^-9); a 2-layer model's logits pass ~10 bf16 matmuls, so
# they drift by a few percent of their range. Same bound as the pure-bf16 model test (test_models.py); the
# measured gaps are 0.5-1.5% of max|logit|.
REL, ABS = 0.05, 0.05


def _loss_and_grads(model, x):
    model.zero_grad(set_to_none=True)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=x, labels=x)
    out.loss.backward()
    return out.logits, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_model_trains_under_cpu_bf16_autocast_close_to_fp32(variant):
    model = tiny_model("llama", variant)
    x = ids(2, 9)
    with torch.no_grad():
        ref = model(input_ids=x).logits
    with recording(variant) as calls:
        low, grads = _loss_and_grads(model, x)
    # which dtypes q/k/v arrive in depends on the torch/transformers release (RoPE'd q/k are fp32 on 5.24, v bf16;
    # torch 2.11's CPU autocast leaves v fp32 too); the variant answers in the autocast dtype either way, as sdpa
    assert calls and all(out.dtype == torch.bfloat16 for *_, out in calls)
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < REL * ref.abs().max() + ABS
    qkv = {n: g for n, g in grads.items() if n.split(".")[-2] in {"q_proj", "k_proj", "v_proj"}}
    assert qkv and all(g is not None and torch.isfinite(g).all() and g.norm() > 0 for g in qkv.values())


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_dtype_matches_sdpa_under_autocast(variant):
    """What transformers' o_proj receives: the dtype sdpa returns in the same region."""
    module = SimpleNamespace(is_causal=True, layer_idx=0, training=False, config=SimpleNamespace())
    q, k = torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16)
    v = torch.randn(1, 2, 8, 16, dtype=torch.bfloat16)  # RoPE'd q/k in fp32, v from the bf16 projection
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v).dtype
        out, _ = hf_attn.get_variant(variant).function(module, q, k, v, None)
    assert out.dtype == want == torch.bfloat16


@pytest.mark.parametrize("variant", VARIANTS)
def test_mixed_dtypes_outside_autocast_still_get_the_clear_error(variant):
    module = SimpleNamespace(is_causal=True, layer_idx=0, training=False, config=SimpleNamespace())
    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(hf_attn.HfAttnError, match="dtypes differ.*torch.autocast"):
        hf_attn.get_variant(variant).function(module, q, q, q.bfloat16(), None)


def test_float64_is_left_alone_under_autocast():
    """Autocast never casts float64 (sdpa neither): exact references keep working inside a region."""
    module = SimpleNamespace(is_causal=True, layer_idx=0, training=False, config=SimpleNamespace())
    q = torch.randn(1, 2, 8, 16, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = hf_attn.get_variant("holo").function(module, q, q, q, None)
    assert out.dtype == torch.float64


@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_kernel_path_is_chosen_for_the_autocast_dtype(variant, monkeypatch):
    """fp32 inputs of head_dim 96 stay on PyTorch (`kernels_enabled`); under bf16 autocast the same call
    dispatches to the Triton kernel (run by the interpreter on CPU) with bf16 tensors, forward and backward."""
    triton = pytest.importorskip("triton")
    if not torch.cuda.is_available() and not triton.knobs.runtime.interpret:
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    target = {"holo": holo, "performer": performer}[variant]
    seen = []

    def rule_as_on_cuda(x):  # the real rule, with the CPU tensor taken for a CUDA one
        with mock.patch.object(torch.Tensor, "is_cuda", property(lambda self: True)):
            seen.append((x.dtype, kernels.kernels_enabled(x)))
        return seen[-1][1]

    monkeypatch.setattr(target, "kernels_enabled", rule_as_on_cuda)
    name = "holo_causal" if variant == "holo" else "performer_causal"
    kmod = __import__(f"hf_attn.attention.{variant}.kernel", fromlist=[name])
    real, got = getattr(kmod, name), []
    monkeypatch.setattr(kmod, name, lambda q, *a, **kw: got.append(q.dtype) or real(q, *a, **kw))
    fn = hf_attn.get_variant(variant).function
    module = SimpleNamespace(is_causal=True, layer_idx=0, training=False,
                             config=SimpleNamespace(performer_num_features=32))
    q, k, v = (torch.randn(1, 2, 16, 96, requires_grad=True) for _ in range(3))
    ref, _ = fn(module, q, k, v, None)
    assert seen == [(torch.float32, False)] and not got
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = fn(module, q, k, v, None)
    assert seen[-1] == (torch.bfloat16, True) and got == [torch.bfloat16], "the bf16 kernel was not taken"
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < REL * ref.abs().max()
    out.float().square().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() and t.grad.norm() > 0 for t in (q, k, v))
