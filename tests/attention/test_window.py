"""Window hybrids (`config.hf_attn_window`): softmax over the last W keys + holo/performer over older keys."""
from types import SimpleNamespace

import pytest
import torch

import hf_attn
from harness import (
    assert_bf16_close,
    assert_calls_match,
    cache_gap,
    future_leak,
    ids,
    logits,
    padding_gap,
    qkv_grads,
    recurrent_generate_gap,
    tiny_model,
)
from hf_attn.attention import window as window_math
from hf_attn.utils import CACHE_KWARG
from references import REFERENCES

VARIANTS = ["holo", "performer"]
ARCHS = ["llama", "qwen3"]
W = 3  # shorter than every input below, so both parts contribute


def windowed(arch: str, variant: str, size: int = W, dtype=torch.float32, sinks: int = 0, **config):
    """A tiny model with a window; `hf_attn.set_window` reaches T5's stacks, which keep their own config copies."""
    model = hf_attn.set_window(tiny_model(arch, variant, dtype=dtype), size, sinks=sinks)
    for name, value in config.items():
        setattr(model.config, name, value)
    return model


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mix", [0.1, 0.0])
def test_window_covering_the_input_is_softmax(variant, arch, mix):
    x = ids(2, 9)
    mask = torch.ones_like(x)
    mask[1, 6:] = 0
    with torch.no_grad():
        ref = logits(tiny_model(arch, "sdpa"), x, mask)
        out = logits(windowed(arch, variant, size=9, hf_attn_window_mix=mix), x, mask)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_short_window_is_neither_softmax_nor_the_variant(variant, arch):
    x = ids(2, 12)
    with torch.no_grad():
        hybrid = logits(windowed(arch, variant), x)
        softmax = logits(tiny_model(arch, "sdpa"), x)
        pure = logits(tiny_model(arch, variant), x)
    assert (hybrid - softmax).abs().max() > 1e-2 and (hybrid - pure).abs().max() > 1e-2
    torch.testing.assert_close(hybrid[:, :W], softmax[:, :W], rtol=0, atol=1e-5)  # no older key yet


@pytest.mark.parametrize("variant", VARIANTS)
def test_zero_mix_is_sliding_window_softmax(variant):
    """gamma = 0 keeps only the window: Mistral's own sliding-window softmax (sdpa) with the same weights."""
    x = ids(2, 12)
    ref_model = tiny_model("mistral", "sdpa")
    ref_model.config.sliding_window = W
    with torch.no_grad():
        ref = logits(ref_model, x)
        out = logits(windowed("mistral", variant, hf_attn_window_mix=0.0), x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("sinks,mix", [(0, 0.3), (2, 0.3), (2, 0.0)])
def test_calls_match_float64_reference(variant, arch, sinks, mix):
    """Left padding included: a row's sinks are its first real tokens, wherever they sit."""
    x = ids(2, 11)
    mask = torch.ones_like(x)
    mask[1, :3] = 0
    model = windowed(arch, variant, sinks=sinks, hf_attn_window_mix=mix)
    assert_calls_match(model, variant, REFERENCES[variant], x, mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("sinks", [0, 2])
def test_causal_and_padding_and_dynamic_cache(variant, arch, sinks):
    model = windowed(arch, variant, sinks=sinks)
    assert future_leak(model) == 0.0
    assert padding_gap(model, "left") < 1e-4 and padding_gap(model, "right") < 1e-4
    same, gap = cache_gap(model)
    assert same and gap < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("sinks", [0, 2, 6])
def test_recurrent_cache_equals_full_forward(variant, arch, sinks):
    """Left padding included: the padded keys sit in the first window buffer; 6 sinks outnumber the padded row's
    4 prompt tokens, so the cache fills its sinks during generation."""
    same, gap = recurrent_generate_gap(windowed(arch, variant, sinks=sinks))
    assert same and gap < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("sinks", [0, 3])
def test_state_stays_constant_once_the_window_is_full(variant, sinks):
    model = windowed("llama", variant, size=4, sinks=sinks)
    cache = hf_attn.RecurrentCache()
    sizes = []
    with torch.no_grad():
        model(input_ids=ids(1, 2), **{CACHE_KWARG: cache}, use_cache=True)
        for t in range(8):
            model(input_ids=ids(1, 1, seed=9 + t), **{CACHE_KWARG: cache}, use_cache=True)
            sizes.append(cache.state_bytes())
    assert sizes[0] < sizes[1]  # 3 then 4 tokens: the window buffer is still filling
    assert len(set(sizes[2:])) == 1 and cache.layers[0].state["window_k"].shape[2] == 4


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("sinks", [0, 2])
def test_gradients_reach_qkv(variant, arch, sinks):
    norms = qkv_grads(windowed(arch, variant, sinks=sinks))
    assert norms and all(n > 0 and n == n for n in norms.values()), norms


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_a_mix_tensor(variant):
    """A learned per-head logit (as the linearize wrapper holds it) gets gradients, also at a share of ~0."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 10, 16, requires_grad=True), torch.randn(1, 2, 10, 16), torch.randn(1, 2, 10, 16)
    logit = torch.nn.Parameter(torch.tensor([-2.0, 0.0, 1.0, -30.0]))
    module = SimpleNamespace(is_causal=True, layer_idx=0, training=False, hf_attn_parts=SimpleNamespace(
        window_mix_logit=logit), config=SimpleNamespace(hf_attn_window=3))
    out, _ = hf_attn.get_variant(variant).function(module, q, k, v, None)
    out.square().sum().backward()
    assert torch.isfinite(logit.grad).all() and (logit.grad[:3].abs() > 0).all() and q.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_is_close_to_fp32(variant, arch):
    assert_bf16_close(lambda dtype: windowed(arch, variant, dtype=dtype, sinks=2), ids(2, 12))


@pytest.mark.parametrize("variant", VARIANTS)
def test_kernels_are_not_used_with_a_window(variant, monkeypatch):
    """The Triton kernels do no windows: with one set, the dispatch takes the PyTorch path even where the
    kernels would run (forced on here); without one, the same call reaches the kernel."""
    from hf_attn.attention.holo import attention as holo
    from hf_attn.attention.performer import attention as performer, kernel as performer_kernel

    module = {"holo": holo, "performer": performer}[variant]
    monkeypatch.setattr(module, "kernels_enabled", lambda x: True)

    def kernel(*args, **kwargs):
        raise RuntimeError("kernel called")

    monkeypatch.setattr(holo, "_holo_kernel", kernel)
    monkeypatch.setattr(performer_kernel, "performer_causal", kernel)
    model = windowed("llama", variant)
    with torch.no_grad():
        logits(model, ids(1, 8))
        model.config.hf_attn_window = 0
        with pytest.raises(RuntimeError, match="kernel called"):
            logits(model, ids(1, 8))


def test_window_part_is_banded():
    """No call intermediate grows like T x T: long inputs run in O(T * (chunk + W)) memory."""
    from torch.utils._python_dispatch import TorchDispatchMode

    t, size = 1024, 16
    sizes = []

    class Sizes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            sizes.extend(x.numel() for x in (out if isinstance(out, (tuple, list)) else [out])
                         if isinstance(x, torch.Tensor))
            return out

    q, k, v = (torch.randn(1, 1, t, 16) for _ in range(3))
    keep = torch.ones(1, 1, t, dtype=torch.bool)
    with Sizes():
        out, _ = window_math.window_softmax(q, k, v, keep, 0, size, 0.25)
    assert max(sizes) < t * t // 4, max(sizes)
    scores = (q @ k.transpose(-1, -2) * 0.25).squeeze(1)
    pos = torch.arange(t)
    band = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - size)
    dense = torch.softmax(scores.masked_fill(~band, float("-inf")), -1) @ v.squeeze(1)
    torch.testing.assert_close(out[:, 0, 0], dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_sinks", [False, True])
def test_one_query_row_equals_the_last_row_of_the_banded_path(with_sinks):
    """A decoding step's window part takes the one-row path; it must equal the banded path's row for that query,
    left padding and sinks included (sinks enter only once they left the window)."""
    g = torch.Generator().manual_seed(0)
    b, hq, hkv, t, d, size = 2, 4, 2, 12, 8, 4
    q, k, v = (torch.randn(b, h, t, d, generator=g) for h in (hq, hkv, hkv))
    keep = torch.ones(b, 1, t, dtype=torch.bool)
    keep[1, :, :3] = False
    sinks = None
    if with_sinks:
        sinks = window_math.Sinks(torch.randn(b, hkv, 2, d, generator=g), torch.randn(b, hkv, 2, d, generator=g),
                                  torch.tensor([[0, 1], [9, 10]]), torch.tensor([[True, True], [True, False]]))
    for base in (0, 5):  # key 0's absolute position: the sink at 9 is inside the last query's window at base 0 only
        banded = window_math.window_softmax(q[:, :, -2:], k, v, keep, t - 2, size, 0.3, sinks, base)
        one = window_math.window_softmax(q[:, :, -1:], k, v, keep, t - 1, size, 0.3, sinks, base)
        for a, r in zip(one, banded):
            torch.testing.assert_close(a, r[..., -1:, :] if a.dim() == 5 else r[..., -1:], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_window_hybrid_decoding_step_issues_fewer_host_ops(variant):
    """Eager decoding of a hybrid is host-bound (each torch op costs the host ~20 us on a GPU machine, ~30 layers
    per token): a step of one layer issues at most 210 ops (272 and 262 before the one-row window path)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from hf_attn.cache import RecurrentLayer

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += 1
            return func(*args, **(kwargs or {}))

    module = SimpleNamespace(is_causal=True, layer_idx=0, training=False,
                             config=SimpleNamespace(hf_attn_window=8, hf_attn_window_sinks=4, performer_num_features=64))
    layer, fn = RecurrentLayer(), hf_attn.get_variant(variant).function
    with torch.no_grad():
        for t in (20, 1, 1):
            q, k, v = (torch.randn(1, 4, t, 32) for _ in range(3))
            with Ops() as ops:
                fn(module, q, *layer.update(k, v), None)
    assert ops.count <= 210, ops.count


@pytest.mark.parametrize("variant", VARIANTS)
def test_bad_settings_are_clear_errors(variant):
    x = ids(1, 6)
    for bad, match in ((-1, "hf_attn_window must be a whole number"), (2.5, "hf_attn_window must be a whole number")):
        model = tiny_model("llama", variant)
        model.config.hf_attn_window = bad
        with pytest.raises(hf_attn.HfAttnError, match=match):
            logits(model, x)
        with pytest.raises(hf_attn.HfAttnError, match=match):
            hf_attn.set_window(model, bad)
    with pytest.raises(hf_attn.HfAttnError, match=r"hf_attn_window_mix must be a number in \[0, 1\]"):
        logits(windowed("llama", variant, hf_attn_window_mix=1.5), x)
    for bad in (-1, 2.5, True):
        with pytest.raises(hf_attn.HfAttnError, match=r"hf_attn_window_sinks must be a whole number >= 0.*sinks=4"):
            logits(windowed("llama", variant, hf_attn_window_sinks=bad), x)
        with pytest.raises(hf_attn.HfAttnError, match="hf_attn_window_sinks must be a whole number"):
            hf_attn.set_window(tiny_model("llama", variant), 4, sinks=bad)
    with pytest.raises(hf_attn.HfAttnError, match="set config.hf_attn_window = 0 for this model"):
        logits(windowed("t5", variant), x)
    with pytest.raises(hf_attn.HfAttnError, match="output_attentions is not available"):
        logits(windowed("llama", variant), x, output_attentions=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_decoding_stops_searching_once_every_row_has_its_sinks(variant, monkeypatch):
    """A prompt with fewer real tokens than sinks fills them while decoding; after that the steps reuse them."""
    model = windowed("llama", variant, size=4, sinks=3)
    cache = hf_attn.RecurrentCache()
    searches = []
    order = torch.Tensor.argsort
    monkeypatch.setattr(torch.Tensor, "argsort", lambda x, *a, **k: searches.append(1) or order(x, *a, **k))
    with torch.no_grad():
        model(input_ids=ids(1, 2), **{CACHE_KWARG: cache}, use_cache=True)  # 2 of 3 sinks
        model(input_ids=ids(1, 1, seed=4), **{CACHE_KWARG: cache}, use_cache=True)  # the third
        found = len(searches)
        for t in range(3):
            model(input_ids=ids(1, 1, seed=5 + t), **{CACHE_KWARG: cache}, use_cache=True)
    layers = model.config.num_hidden_layers
    assert found == 2 * layers and len(searches) == found
    assert cache.layers[0].state["sink_valid"].all() and cache.layers[0].state["sink_pos"].tolist() == [[0, 1, 2]]
