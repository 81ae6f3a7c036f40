"""Gauge attention beyond the shared harness: frames and per-token variances, path choice, masks, bf16, memory."""
from types import SimpleNamespace

import pytest
import torch

import hf_attn
from hf_attn.attention.gauge import attention as gauge_mod
from hf_attn.attention.gauge import settings_from_config
from gauge_cases import RandomBeliefs
from references import gauge_reference
from test_kernels import _visible  # noqa: E402  (same folder: pytest puts it on sys.path)

fn = hf_attn.get_variant("gauge").function


def _module(causal=True, **cfg):
    return SimpleNamespace(is_causal=causal, layer_idx=0, training=False, config=SimpleNamespace(**cfg))


@pytest.mark.parametrize("per_block", [True, False])
@pytest.mark.parametrize("b,hq,hkv,tq,tk,causal,pad", [
    (2, 4, 2, 9, 9, True, True), (1, 2, 1, 3, 8, True, False), (2, 2, 2, 6, 6, False, True),
])
def test_frames_and_token_variances_match_reference(per_block, b, hq, hkv, tq, tk, causal, pad):
    d = 16
    module = _module(causal)
    q, k, v = (torch.randn(b, h, t, d, dtype=torch.float64) for h, t in ((hq, tq), (hkv, tk), (hkv, tk)))
    padding = None
    if pad:
        padding = torch.ones(b, tk, dtype=torch.bool)
        padding[0, :2] = False
    src = RandomBeliefs(settings_from_config(module.config, d, d**-0.5), per_block)
    out, _ = fn(module, q, k, v, padding, scaling=d**-0.5, gauge_beliefs=src)
    layout = src.settings.layout
    qb, kb = src.made["q"], src.made["k"]
    ref = gauge_reference(module, q, k, v, _visible(b, hq, tq, tk, causal, padding), None, d**-0.5,
                          phi_q=qb.phi, phi_k=kb.phi, var_q=qb.var_per_dim(layout), var_k=kb.var_per_dim(layout))
    live = _visible(b, hq, tq, tk, causal, padding).any(-1).transpose(1, 2)
    torch.testing.assert_close(out[live], ref[live], rtol=1e-6, atol=1e-8)


def test_fast_path_runs_on_sdpa_and_explicit_only_when_needed(monkeypatch):
    q, k, v = (torch.randn(1, 2, 10, 16) for _ in range(3))
    module = _module()
    used = []
    monkeypatch.setattr(gauge_mod, "explicit_path", lambda *a: used.append("explicit") or (_ for _ in ()).throw(RuntimeError))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(gauge_mod.F, "scaled_dot_product_attention", lambda *a, **kw: used.append("sdpa") or sdpa(*a, **kw))
    fn(module, q, k, v, None)
    assert used == ["sdpa"]
    src = RandomBeliefs(settings_from_config(module.config, 16, None), per_block=False)
    with pytest.raises(RuntimeError):
        fn(module, q, k, v, None, gauge_beliefs=src)
    assert used[-1] == "explicit"


def test_fast_and_explicit_paths_agree_with_4d_bool_mask_and_position_bias():
    q, k, v = (torch.randn(2, 4, 7, 16) for _ in range(3))
    mask = torch.ones(2, 1, 7, 7, dtype=torch.bool).tril()
    mask[1, :, :, :3] = False  # left padding; rows 0-2 of item 1 see nothing
    bias = torch.randn(1, 4, 7, 7)
    module = _module()
    fast, _ = fn(module, q, k, v, mask, position_bias=bias)
    slow, w = fn(module, q, k, v, mask, position_bias=bias, output_attentions=True)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(fast).all() and (fast[1, :3] == 0).all()
    torch.testing.assert_close(w[0].sum(-1), torch.ones(4, 7))


def test_config_knobs_change_the_result_and_bad_ones_are_refused():
    q, k, v = (torch.randn(1, 2, 12, 16) for _ in range(3))
    base, _ = fn(_module(), q, k, v, None)
    cold, _ = fn(_module(gauge_kappa=0.5), q, k, v, None)
    spec, _ = fn(_module(gauge_irrep_spec="1x2", gauge_variance=[0.5, 2.0]), q, k, v, None)
    assert not torch.allclose(base, cold) and not torch.allclose(base, spec)
    with pytest.raises(hf_attn.HfAttnError, match="needs 25 dimensions"):
        fn(_module(gauge_irrep_spec="5x2"), q, k, v, None)
    with pytest.raises(hf_attn.HfAttnError, match="kappa"):
        fn(_module(gauge_kappa=-1.0), q, k, v, None)


def test_pad_width_changes_speed_not_the_result():
    """config.gauge_pad_width only zero-pads the augmented vectors: same output, parameter-free and learned."""
    q, k, v = (torch.randn(2, 2, 9, 16, dtype=torch.float64) for _ in range(3))
    settings = settings_from_config(None, 16, None)
    for learned in (False, True):
        kw = lambda: {"gauge_beliefs": RandomBeliefs(settings, per_block=True)} if learned else {}  # noqa: E731
        base, _ = fn(_module(), q, k, v, None, **kw())
        wide, _ = fn(_module(gauge_pad_width=64), q, k, v, None, **kw())
        torch.testing.assert_close(wide, base, rtol=1e-10, atol=1e-12)
    for bad in (20, 30, True):
        with pytest.raises(hf_attn.HfAttnError, match="gauge_pad_width must be a multiple of 8 >= 24"):
            fn(_module(gauge_pad_width=bad), q, k, v, None)


@pytest.mark.parametrize("variance", [1.0, 2.0])  # unit variances skip the key scaling: both prologue branches
def test_bf16_keeps_large_key_norms_accurate(variance):
    """|k|^2 / 2 terms reach hundreds: the split key constant keeps bf16 within bf16's own logit error."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 128, 64, generator=g) * s for s in (3.0, 3.0, 1.0))
    module = _module(gauge_variance=variance)
    ref, _ = fn(module, q.double(), k.double(), v.double(), None)
    low, _ = fn(module, q.bfloat16(), k.bfloat16(), v.bfloat16(), None)
    sdpa_ref = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    sdpa_low = torch.nn.functional.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=True)
    gauge_err = (low.double() - ref).abs().mean()
    sdpa_err = (sdpa_low.double() - sdpa_ref).abs().mean()
    assert gauge_err < 2 * sdpa_err, (gauge_err, sdpa_err)


def test_memory_grows_linearly():
    from torch.profiler import ProfilerActivity, profile

    def peak(t):
        q, k, v = (torch.randn(1, 2, t, 32) for _ in range(3))
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn(_module(), q, k, v, None)
        return max(e.cpu_memory_usage for e in prof.key_averages())

    small, big = peak(2048), peak(8192)
    assert big < 4 * small * 1.3, f"largest allocation grew {big / small:.1f}x for 4x tokens"
