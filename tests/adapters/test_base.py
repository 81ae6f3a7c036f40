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


def _saved(folder, init=1.0):
    """A tiny Llama wrapped with test_scale (scales at `init`), saved into `folder`."""
    model = hf_attn.wrap(tiny_model("llama", "sdpa"), ScaleConfig(init=init))
    hf_attn.save_wrapper(model, folder)
    return model


def test_corrupt_weights_leave_the_model_unwrapped_and_a_retry_works(tmp_path):
    _saved(tmp_path, init=1.5)
    weights = tmp_path / "hf_attn_wrapper.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # truncated, as by an interrupted copy
    base = tiny_model("llama", "sdpa")
    with pytest.raises(hf_attn.HfAttnError, match=r"hf_attn_wrapper\.safetensors cannot be read.*truncated"):
        hf_attn.load_wrapper(base, tmp_path)
    assert getattr(base, "hf_attn_wrapper", None) is None
    weights.write_bytes(whole)
    hf_attn.load_wrapper(base, tmp_path)  # the retry is not refused as "already wrapped"
    assert all(p.eq(1.5).all() for n, p in base.named_parameters() if n.endswith(".scale"))


def test_json_and_weights_of_two_saves_are_refused(tmp_path):
    """A reader between save_wrapper's two renames sees the old JSON with the new weights."""
    _saved(tmp_path / "old", init=1.0)
    _saved(tmp_path / "new", init=2.0)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "hf_attn_wrapper.json").write_bytes((tmp_path / "old" / "hf_attn_wrapper.json").read_bytes())
    (mixed / "hf_attn_wrapper.safetensors").write_bytes((tmp_path / "new" / "hf_attn_wrapper.safetensors").read_bytes())
    base = tiny_model("llama", "sdpa")
    with pytest.raises(hf_attn.HfAttnError, match="two different saves"):
        hf_attn.load_wrapper(base, mixed)
    assert getattr(base, "hf_attn_wrapper", None) is None


@pytest.mark.parametrize("text,problem", [
    ("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"),
    ('{"init": 2.0}', "with a 'wrapper_type' string")])
def test_malformed_wrapper_json_is_a_clear_error(tmp_path, text, problem):
    _saved(tmp_path)
    (tmp_path / "hf_attn_wrapper.json").write_text(text)
    base = tiny_model("llama", "sdpa")
    with pytest.raises(hf_attn.HfAttnError, match=f"hf_attn_wrapper.json.*{problem}.*save_wrapper"):
        hf_attn.load_wrapper(base, tmp_path)
    assert getattr(base, "hf_attn_wrapper", None) is None


def test_set_attention_keeps_a_wrappers_effect():
    """A wrapper that needs its own attention (gauge) refuses a switch; any other keeps the switch on unwrap."""
    gauge = hf_attn.wrap(tiny_model("llama", "sdpa"), hf_attn.GaugeConfig())
    with pytest.raises(hf_attn.HfAttnError, match="needs attention 'gauge'.*hf_attn.unwrap"):
        hf_attn.set_attention(gauge, "holo")
    assert gauge.config._attn_implementation == "gauge"
    hf_attn.unwrap(gauge)
    assert gauge.config._attn_implementation == "sdpa"  # the wrapper's own switch is undone

    scaled = hf_attn.set_attention(hf_attn.wrap(tiny_model("llama", "sdpa"), ScaleConfig()), "holo")
    assert hf_attn.unwrap(scaled).config._attn_implementation == "holo"
