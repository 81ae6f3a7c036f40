import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig



@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("The quick brown fox jumps over the lazy dog. " * 200)
    return path


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory) -> Path:
    """A from_pretrained folder: a tiny random Llama with SmolLM2's tokenizer (stands in for SmolLM2)."""
    from hf_attn.assets import smollm2_path

    src = smollm2_path()
    out = tmp_path_factory.mktemp("tiny_pretrained")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, out / f)
    return out

