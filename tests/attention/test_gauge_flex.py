"""The gauge FlexAttention path: same function as the reference and the SDPA path, chosen only where it applies.

On the CPU FlexAttention has no backward, so the forward is checked there; with CUDA the same cases also
check every gradient (including through the key constant, a captured score bias) against a float64 reference.
"""
from types import SimpleNamespace

import pytest
import torch

import hf_attn
from hf_attn.attention import gauge as gauge_mod
from hf_attn.attention import gauge_flex
from references import gauge_reference
from test_kernels import _visible  # noqa: E402  (same folder: pytest puts it on sys.path)

fn = hf_attn.get_variant("gauge").function
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def _module(**cfg):
    return SimpleNamespace(is_causal=True, layer_idx=0, training=False, config=SimpleNamespace(**cfg))


def _rel(a, r):
    return ((a.double() - r).norm() / r.norm()).item()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)] if CUDA else
                         [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("hq,hkv,t,variance", [(4, 2, 37, [0.5, 2.0]), (2, 2, 200, 1.0)])
def test_flex_path_matches_reference(dtype, tol, hq, hkv, t, variance):
    d, scale = 16, 0.3
    cfg = dict(gauge_backend="flex", gauge_irrep_spec="1x2", gauge_variance=variance)
    g = torch.Generator().manual_seed(t)
    q, k, v = (torch.randn(2, h, t, d, generator=g, dtype=torch.float64) * s
               for h, s in ((hq, 2.0), (hkv, 2.0), (hkv, 1.0)))
    ref = gauge_reference(_module(**cfg), q, k, v, _visible(2, hq, t, t, True, None), None, scale)
    leaves = [x.to(DEVICE, dtype).requires_grad_(CUDA) for x in (q, k, v)]
    out, _ = fn(_module(**cfg), *leaves, None, scaling=scale)
    assert out.shape == (2, t, hq, d) and out.dtype == dtype
    assert _rel(out.cpu(), ref) < tol
    if CUDA:
        grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
        refs = torch.autograd.grad(gauge_reference(
            _module(**cfg), *(x.requires_grad_() for x in (q, k, v)), _visible(2, hq, t, t, True, None), None, scale,
        ), (q, k, v), grad)
        out.backward(grad.to(DEVICE, dtype))
        for leaf, r in zip(leaves, refs):
            assert _rel(leaf.grad.cpu(), r) < 5 * tol


def test_flex_and_sdpa_paths_agree():
    q, k, v = (torch.randn(1, 4, 50, 32, device=DEVICE) for _ in range(3))
    with torch.no_grad():
        flex, _ = fn(_module(gauge_backend="flex", gauge_variance=0.7), q, k, v, None)
        sdpa, _ = fn(_module(gauge_backend="sdpa", gauge_variance=0.7), q, k, v, None)
    torch.testing.assert_close(flex, sdpa, rtol=1e-4, atol=1e-5)


def test_auto_takes_flex_only_on_cuda_for_plain_causal_calls(monkeypatch):
    taken = []
    real = gauge_mod.flex_forward
    monkeypatch.setattr(gauge_mod, "flex_forward", lambda *a: taken.append(a[0].device.type) or real(*a))
    q, k, v = (torch.randn(1, 2, 12, 16, device=DEVICE) for _ in range(3))
    with torch.no_grad():
        fn(_module(), q, k, v, None)
        assert taken == (["cuda"] if CUDA else [])
        pad = torch.ones(1, 12, dtype=torch.bool, device=DEVICE)
        pad[0, :3] = False
        fn(_module(), q, k, v, pad)  # padding: SDPA
        fn(_module(gauge_backend="sdpa"), q, k, v, None)
        fn(_module(), q[:, :, -5:], k, v, None)  # queries after a cached prefix: SDPA
    assert taken == (["cuda"] if CUDA else [])


def test_flex_refusals_name_the_reason():
    q, k, v = (torch.randn(1, 2, 12, 16) for _ in range(3))
    pad = torch.ones(1, 12, dtype=torch.bool)
    pad[0, 0] = False
    with pytest.raises(hf_attn.HfAttnError, match="padding masks"):
        fn(_module(gauge_backend="flex"), q, k, v, pad)
    with pytest.raises(hf_attn.HfAttnError, match="must be one of"):
        fn(_module(gauge_backend="triton"), q, k, v, None)
    noncausal = _module(gauge_backend="flex")
    noncausal.is_causal = False
    with pytest.raises(hf_attn.HfAttnError, match="causal self-attention"):
        fn(noncausal, q, k, v, None)
    if not CUDA:
        with pytest.raises(hf_attn.HfAttnError, match="no CPU backward"):
            fn(_module(gauge_backend="flex"), q.requires_grad_(), k, v, None)


def test_missing_flexattention_is_a_clear_refusal(monkeypatch):
    monkeypatch.setattr(gauge_flex, "_flex_missing", lambda: "FlexAttention is not in torch 2.4 (needs >= 2.5)")
    q, k, v = (torch.randn(1, 2, 8, 16, device=DEVICE) for _ in range(3))
    with torch.no_grad():
        with pytest.raises(hf_attn.HfAttnError, match="needs >= 2.5"):
            fn(_module(gauge_backend="flex"), q, k, v, None)
        out, _ = fn(_module(), q, k, v, None)  # auto falls back to SDPA
    assert torch.isfinite(out).all()
