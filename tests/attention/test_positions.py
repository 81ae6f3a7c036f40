"""Left padding under RoPE: holo/performer warn when a plain forward leaves out position_ids, not otherwise."""
import warnings

import pytest
import torch

from harness import ids, tiny_model
from hf_attn.attention.positions import shifted_rows

MASK = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]])
POSITIONS = (MASK.cumsum(-1) - 1).clamp_min(0)


def left_padding_warnings(model, **kw) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            model(input_ids=ids(2, 8), **kw)
    return [str(w.message) for w in caught if "left-padded" in str(w.message)]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("variant", ["holo", "performer"])
def test_warns_for_left_padding_without_position_ids(arch, variant):
    model = tiny_model(arch, variant)
    found = left_padding_warnings(model, attention_mask=MASK)
    assert len(found) == 1 and found[0].startswith(variant) and "position_ids=" in found[0]  # once per forward
    assert not left_padding_warnings(model, attention_mask=MASK, position_ids=POSITIONS)
    assert not left_padding_warnings(model, attention_mask=MASK.flip(-1))  # right padding: positions start at 0


def test_the_warning_is_about_a_real_difference():
    """Without mask-derived positions a left-padded holo row differs from its unpadded run; with them it does not."""
    model = tiny_model("llama", "holo")
    x = ids(2, 8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = model(input_ids=x[:1, 3:]).logits[0]
        shifted = model(input_ids=x, attention_mask=MASK).logits[0, 3:]
        placed = model(input_ids=x, attention_mask=MASK, position_ids=POSITIONS).logits[0, 3:]
    assert (shifted - single).abs().max() > 1e-3
    torch.testing.assert_close(placed, single, atol=1e-4, rtol=1e-4)


def test_generate_on_a_left_padded_batch_does_not_warn():
    model = tiny_model("llama", "holo")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.generate(input_ids=ids(2, 8), attention_mask=MASK, max_new_tokens=2, do_sample=False, pad_token_id=0)
    assert not [w for w in caught if "left-padded" in str(w.message)]


def test_shifted_rows():
    assert shifted_rows(MASK.bool(), torch.arange(8)[None]).tolist() == [True, False]
    assert shifted_rows(MASK.bool(), POSITIONS).tolist() == [False, False]
