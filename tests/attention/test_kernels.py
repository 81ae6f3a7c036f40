"""Each attention function against its float64 reference, directly on tensors (fla's test shape)."""
from types import SimpleNamespace

import pytest
import torch

import hf_attn
from references import REFERENCES

VARIANTS = sorted(hf_attn.list_variants())


def test_every_variant_has_reference():
    assert set(VARIANTS) <= set(REFERENCES), f"variants without a float64 reference: {set(VARIANTS) - set(REFERENCES)}"


def _module(causal, **cfg):
    return SimpleNamespace(is_causal=causal, layer_idx=1, training=False, config=SimpleNamespace(**cfg))


def _visible(b, hq, tq, tk, causal, padding):
    vis = torch.ones(b, hq, tq, tk, dtype=torch.bool)
    if causal:
        vis &= torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)
    if padding is not None:
        vis &= padding[:, None, None, :]
    return vis


CASES = [
    # b, hq, hkv, tq, tk, d, causal, pad
    (2, 4, 4, 37, 37, 16, True, False),
    (2, 4, 2, 130, 130, 32, True, True),   # GQA, > one performer chunk, left padding
    (1, 6, 2, 3, 20, 8, True, False),      # decoding: 3 new queries after 17 cached keys
    (2, 4, 1, 11, 11, 16, False, True),    # encoder, MQA, padding
    (2, 2, 2, 5, 9, 16, False, False),     # cross-attention shape
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("b,hq,hkv,tq,tk,d,causal,pad", CASES)
def test_matches_reference(variant, b, hq, hkv, tq, tk, d, causal, pad):
    fn = hf_attn.get_variant(variant).function
    g = torch.Generator().manual_seed(tq * 31 + d)
    q = torch.randn(b, hq, tq, d, generator=g)
    k = torch.randn(b, hkv, tk, d, generator=g)
    v = torch.randn(b, hkv, tk, d, generator=g)
    padding = None
    if pad:
        padding = torch.ones(b, tk, dtype=torch.bool)
        padding[0, : tk // 3] = False  # left padding on the first row
    module = _module(causal, performer_num_features=64)
    out, _ = fn(module, q, k, v, padding, scaling=d**-0.5)
    ref = REFERENCES[variant](module, q, k, v, _visible(b, hq, tq, tk, causal, padding), None, d**-0.5)
    live = _visible(b, hq, tq, tk, causal, padding).any(-1).transpose(1, 2)  # queries that see a key
    assert out.shape == (b, tq, hq, d)
    torch.testing.assert_close(out.double()[live], ref[live], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_position_bias_path_matches_reference(variant):
    """T5-style additive bias (materialised path) with padding, encoder and decoder."""
    for causal in (False, True):
        q, k, v = (torch.randn(2, 4, 7, 16) for _ in range(3))
        bias = torch.randn(1, 4, 7, 7)
        padding = torch.tensor([[1] * 7, [0, 0] + [1] * 5], dtype=torch.bool)
        module = _module(causal, performer_num_features=64)
        out, _ = hf_attn.get_variant(variant).function(module, q, k, v, padding, position_bias=bias)
        vis = _visible(2, 4, 7, 7, causal, padding)
        ref = REFERENCES[variant](module, q, k, v, vis, bias, None)
        live = vis.any(-1).transpose(1, 2)
        torch.testing.assert_close(out.double()[live], ref[live], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_match_reference(variant):
    q, k, v = (torch.randn(1, 2, 20, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    module = _module(True, performer_num_features=32)
    fn = hf_attn.get_variant(variant).function
    out, _ = fn(module, q.float(), k.float(), v.float(), None, scaling=8**-0.5)
    grads = torch.autograd.grad(out.double().square().sum(), (q, k, v))
    ref = REFERENCES[variant](module, q, k, v, _visible(1, 2, 20, 20, True, None), None, 8**-0.5)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_runs_and_tracks_fp32(variant):
    q, k, v = (torch.randn(1, 4, 64, 32) for _ in range(3))
    fn = hf_attn.get_variant(variant).function
    module = _module(True)
    out32, _ = fn(module, q, k, v, None)
    out16, _ = fn(module, q.bfloat16(), k.bfloat16(), v.bfloat16(), None)
    assert out16.dtype == torch.bfloat16 and torch.isfinite(out16).all()
    assert (out16.float() - out32).abs().max() < 0.1 * out32.abs().max()


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_attentions_rows_are_distributions(variant):
    q, k, v = (torch.randn(1, 2, 9, 16) for _ in range(3))
    _, w = hf_attn.get_variant(variant).function(_module(True), q, k, v, None, output_attentions=True)
    assert w.shape == (1, 2, 9, 9)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 9))
    assert (w.triu(1) == 0).all(), "a causal map must put no weight on future keys"


def test_memory_grows_linearly():
    """Linear paths never allocate a T x T tensor: the largest per-op allocation grows ~linearly from T=2k to 8k."""
    from torch.profiler import ProfilerActivity, profile

    def peak(variant, t):
        q, k, v = (torch.randn(1, 2, t, 32) for _ in range(3))
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            hf_attn.get_variant(variant).function(_module(True), q, k, v, None)
        return max(e.cpu_memory_usage for e in prof.key_averages())

    for variant in ("holo", "performer"):
        small, big = peak(variant, 2048), peak(variant, 8192)
        assert big < 4 * small * 1.3, f"{variant}: largest allocation grew {big / small:.1f}x for 4x tokens"
