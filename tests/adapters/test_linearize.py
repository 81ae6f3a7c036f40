"""The linearize wrapper: learned performer features / holo binding maps and the window mix, PEFT-shaped."""
import pytest
import torch

import hf_attn
from harness import (
    assert_calls_match,
    cache_gap,
    future_leak,
    ids,
    logits,
    padding_gap,
    tiny_model,
    wrapper_round_trip,
)
from hf_attn.adapters import wrapper_parameters
from hf_attn.utils import CACHE_KWARG
from references import REFERENCES

VARIANTS = ["performer", "holo"]
W = 3


def _wrapped(variant, window=0, arch="llama", attn="sdpa", noise=0.0, sinks=0, **cfg):
    """A tiny model with `window` (and `sinks`), wrapped; `noise` moves the learned parts off their start."""
    model = hf_attn.set_window(tiny_model(arch, attn), window, sinks=sinks)
    model = hf_attn.wrap(model, hf_attn.LinearizeConfig(variant=variant, **cfg))
    if noise:
        torch.manual_seed(3)
        with torch.no_grad():
            for p in wrapper_parameters(model).values():
                p.add_(noise * torch.randn_like(p))
    return model


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("window", [0, W])
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_starts_at_the_parameter_free_variant_with_only_its_parts_trainable(variant, window, arch):
    x = ids(2, 9)
    with torch.no_grad():
        free = logits(hf_attn.set_window(tiny_model(arch, variant), window, sinks=2), x)
        model = _wrapped(variant, window, arch, sinks=2)
        start = logits(model, x)
    torch.testing.assert_close(start, free, rtol=0, atol=1e-6)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted(wrapper_parameters(model)) and all(".hf_attn_parts." in n for n in trainable)
    leaves = {n.rsplit(".", 1)[1] for n in trainable}
    parts = {"performer": {"features"}, "holo": {"q_map", "k_map"}}[variant]
    assert leaves == parts | ({"window_mix_logit"} if window else set())
    assert model.config._attn_implementation == variant


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("window", [0, W])
def test_gradients_reach_the_parts_and_the_mix(variant, window):
    model = _wrapped(variant, window)
    x = ids(2, 9)
    model.train()
    model(input_ids=x, labels=x).loss.backward()
    for name, p in wrapper_parameters(model).items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("window", [0, W])
def test_learned_parts_pass_the_harness_and_match_the_reference(variant, window):
    model = _wrapped(variant, window, arch="qwen2", noise=0.05)
    assert future_leak(model) == 0.0
    assert padding_gap(model, "left") < 1e-4 and padding_gap(model, "right") < 1e-4
    same, gap = cache_gap(model)
    assert same and gap < 1e-4
    x = ids(2, 9)
    mask = torch.ones_like(x)
    mask[1, :3] = 0
    assert_calls_match(model, variant, REFERENCES[variant], x, mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("window", [0, W])
def test_recurrent_cache_with_learned_parts(variant, window):
    model = _wrapped(variant, window, noise=0.05)
    tokens = ids(1, 9, seed=3)
    cache = hf_attn.RecurrentCache()
    with torch.no_grad():
        steps = [model(input_ids=tokens[:, :5], **{CACHE_KWARG: cache}, use_cache=True).logits]
        steps += [model(input_ids=tokens[:, t:t + 1], **{CACHE_KWARG: cache}, use_cache=True).logits
                  for t in range(5, 9)]
        full = model(input_ids=tokens).logits
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


def test_wider_binding_space():
    """binding_dim 2 x head_dim: q/k mapped to 32 dims, v zero-padded, outputs truncated back to 16."""
    model = _wrapped("holo", W, noise=0.05, binding_dim=32)
    parts = model.model.layers[0].self_attn.hf_attn_parts
    assert parts.q_map.shape == (4, 16, 32) and parts.k_map.shape == (2, 16, 32)
    assert future_leak(model) == 0.0 and padding_gap(model, "left") < 1e-4
    with torch.no_grad():
        narrow = logits(_wrapped("holo", W, noise=0.05), ids(1, 9))
        wide = logits(model, ids(1, 9))
    assert wide.shape == narrow.shape and (wide - narrow).abs().max() > 1e-3


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_load_unwrap_round_trip(variant, tmp_path):
    x = ids(1, 8)
    with torch.no_grad():
        base = logits(hf_attn.set_window(tiny_model("llama", "sdpa"), W, sinks=2), x)
    model = _wrapped(variant, W, noise=0.05, sinks=2)
    fresh = hf_attn.set_window(tiny_model("llama", "sdpa"), W, sinks=2)
    trained, reloaded, unwrapped = wrapper_round_trip(model, fresh, x, tmp_path)
    torch.testing.assert_close(reloaded, trained, rtol=0, atol=0)
    torch.testing.assert_close(unwrapped, base, rtol=0, atol=0)
    assert model.config._attn_implementation == "sdpa"
    assert not any("hf_attn_parts" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("variant", VARIANTS)
def test_window_only_ablation_is_sliding_window_softmax(variant):
    """`set_window_mix(model, 0.0)` on a wrapped model: Mistral's sliding-window softmax, gradients finite."""
    x = ids(2, 12)
    ref_model = tiny_model("mistral", "sdpa")
    ref_model.config.sliding_window = W
    model = _wrapped(variant, W, arch="mistral", noise=0.05)
    hf_attn.set_window_mix(model, 0.0)
    parts = model.model.layers[0].self_attn.hf_attn_parts
    assert torch.equal(parts.window_mix(), torch.zeros(4)) and model.config.hf_attn_window_mix == 0.0
    with torch.no_grad():
        torch.testing.assert_close(logits(model, x), logits(ref_model, x), rtol=0, atol=1e-5)
    model(input_ids=x, labels=x).loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in wrapper_parameters(model).values())
    hf_attn.set_window_mix(model, 0.25)
    torch.testing.assert_close(parts.window_mix(), torch.full((4,), 0.25))


def test_window_mix_keeps_the_sinks():
    model = _wrapped("holo", W, sinks=2)
    hf_attn.set_window_mix(model, 0.0)
    assert model.config.hf_attn_window_sinks == 2 and model.config.hf_attn_window == W


def test_window_only_ablation_without_a_wrapper():
    x = ids(1, 12)
    plain = hf_attn.set_window(tiny_model("llama", "performer"), W)
    with torch.no_grad():
        before = logits(plain, x)
        after = logits(hf_attn.set_window_mix(plain, 0.0), x)
    assert plain.config.hf_attn_window_mix == 0.0 and (before - after).abs().max() > 1e-3
    with pytest.raises(hf_attn.HfAttnError, match=r"hf_attn.set_window\(model, 64\) first"):
        hf_attn.set_window_mix(tiny_model("llama", "performer"), 0.0)


def test_the_variant_is_pinned():
    """Even when the base already runs the variant, switching away would drop the learned parts: refused."""
    model = _wrapped("performer", attn="performer")
    with pytest.raises(hf_attn.HfAttnError, match="needs attention 'performer'"):
        hf_attn.set_attention(model, "sdpa")
    hf_attn.unwrap(model)
    assert model.config._attn_implementation == "performer"


def test_config_validation():
    with pytest.raises(hf_attn.HfAttnError, match="variant must be one of"):
        hf_attn.LinearizeConfig(variant="gauge")
    with pytest.raises(hf_attn.HfAttnError, match="binding_dim is holo's"):
        hf_attn.LinearizeConfig(variant="performer", binding_dim=32)
    with pytest.raises(hf_attn.HfAttnError, match="even whole number"):
        hf_attn.LinearizeConfig(variant="holo", binding_dim=33)
    with pytest.raises(hf_attn.HfAttnError, match="binding_dim >= 16"):
        _wrapped("holo", binding_dim=8)
    model = hf_attn.set_window(tiny_model("llama", "sdpa"), W)
    model.config.hf_attn_window_mix = 2.0
    with pytest.raises(hf_attn.HfAttnError, match="hf_attn_window_mix must be a number"):
        hf_attn.wrap(model, hf_attn.LinearizeConfig())
    assert model.config._attn_implementation == "sdpa" and not hasattr(model, "hf_attn_wrapper")
    cfg = hf_attn.LinearizeConfig(variant="holo", binding_dim=32, learn_window_mix=False)
    assert hf_attn.adapters.WrapperConfig.from_dict(cfg.to_dict()) == cfg
    fixed = _wrapped("holo", W, learn_window_mix=False)
    assert "window_mix_logit" not in " ".join(wrapper_parameters(fixed))
