"""RecurrentCache: generate with constant-size state gives the tokens and logits of full forwards."""
import pytest
import torch

import hf_attn
from harness import ids, tiny_model


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_recurrent_cache_equals_full_forward(arch, variant):
    model = tiny_model(arch, variant)
    prompt = ids(2, 7, seed=5)
    mask = torch.ones_like(prompt)
    mask[1, :3] = 0  # left padding
    cache = hf_attn.RecurrentCache()
    new = 6
    with torch.no_grad():
        gen = model.generate(input_ids=prompt, attention_mask=mask, past_key_values=cache, max_new_tokens=new,
                             do_sample=False, output_scores=True, return_dict_in_generate=True, pad_token_id=0)
        full_mask = torch.cat([mask, torch.ones(2, new, dtype=mask.dtype)], 1)[:, :-1]
        pos = (full_mask.cumsum(-1) - 1).clamp_min(0)
        full = model(input_ids=gen.sequences[:, :-1], attention_mask=full_mask, position_ids=pos).logits[:, -new:]
    assert gen.past_key_values is cache and cache.get_seq_length() == 7 + new - 1
    assert torch.equal(full.argmax(-1), gen.sequences[:, -new:])
    assert (torch.stack(gen.scores, 1) - full).abs().max() < 1e-4


def test_state_size_does_not_grow():
    model = tiny_model("llama", "holo")
    cache = hf_attn.RecurrentCache()
    with torch.no_grad():
        model(input_ids=ids(1, 5), past_key_values=cache, use_cache=True)
        size = cache.state_bytes()
        for _ in range(3):
            model(input_ids=ids(1, 1, seed=9), past_key_values=cache, use_cache=True)
    assert cache.state_bytes() == size > 0 and cache.get_seq_length() == 8


def test_mixing_variants_on_one_cache_is_refused():
    cache = hf_attn.RecurrentCache()
    with torch.no_grad():
        tiny_model("llama", "holo")(input_ids=ids(1, 4), past_key_values=cache, use_cache=True)
        with pytest.raises(hf_attn.HfAttnError, match="fresh RecurrentCache"):
            tiny_model("llama", "performer")(input_ids=ids(1, 1), past_key_values=cache, use_cache=True)


@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_recurrent_state_refuses_non_causal_calls(variant):
    """An encoder (or a T5 position_bias / 4D-mask call) cannot be served by a running causal state."""
    from types import SimpleNamespace

    from hf_attn.cache import RecurrentLayer

    q, k, v = (torch.randn(1, 2, 3, 16) for _ in range(3))
    k, v = RecurrentLayer().update(k, v)  # tags k with its layer, as transformers' cache.update does
    encoder = SimpleNamespace(is_causal=False, layer_idx=0, training=False, config=SimpleNamespace())
    with pytest.raises(hf_attn.HfAttnError, match="RecurrentCache needs causal self-attention"):
        hf_attn.get_variant(variant).function(encoder, q, k, v, None)
