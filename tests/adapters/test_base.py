"""The shared wrap/save/load/unwrap API, exercised through a minimal test-only wrapper."""
import pytest
import torch

import hf_attn
from harness import ids, tiny_model
from toy_wrapper import ScaleConfig


def test_wrap_freezes_base_and_trains_only_wrapper():
    model = hf_attn.wrap(tiny_model("llama", "sdpa"), ScaleConfig(init=1.5))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".scale") for n in trainable)


def test_save_load_unwrap_round_trip(tmp_path):
    x = ids(1, 8)
    base_logits = tiny_model("llama", "sdpa")(input_ids=x).logits
    model = hf_attn.wrap(tiny_model("llama", "sdpa"), ScaleConfig())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".scale"):
                p.uniform_(0.5, 2.0)
    wrapped_logits = model(input_ids=x).logits
    hf_attn.save_wrapper(model, tmp_path)
    reloaded = hf_attn.load_wrapper(tiny_model("llama", "sdpa"), tmp_path)
    torch.testing.assert_close(reloaded(input_ids=x).logits, wrapped_logits, rtol=0, atol=0)
    hf_attn.unwrap(model)
    torch.testing.assert_close(model(input_ids=x).logits, base_logits, rtol=0, atol=0)
    assert all(p.requires_grad for p in model.parameters())


def test_clear_errors(tmp_path):
    model = tiny_model("llama", "sdpa")
    with pytest.raises(hf_attn.HfAttnError, match="matched no module"):
        hf_attn.wrap(model, ScaleConfig(target_modules=["nope_proj"]))
    hf_attn.wrap(model, ScaleConfig())
    with pytest.raises(hf_attn.HfAttnError, match="already wrapped"):
        hf_attn.wrap(model, ScaleConfig())
    with pytest.raises(hf_attn.HfAttnError, match="no hf-attn wrapper"):
        hf_attn.save_wrapper(tiny_model("llama", "sdpa"), tmp_path)
    with pytest.raises(hf_attn.HfAttnError, match="Unknown ScaleConfig fields"):
        ScaleConfig.from_dict({"wrapper_type": "test_scale", "bogus": 1})
    (tmp_path / "hf_attn_wrapper.json").write_text('{"wrapper_type": "future_thing", "hf_attn_version": "9.9"}')
    with pytest.raises(hf_attn.HfAttnError, match="future_thing.*does not have"):
        hf_attn.load_wrapper(tiny_model("llama", "sdpa"), tmp_path)
