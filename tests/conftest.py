import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

_HERE = os.path.dirname(__file__)
# shared test helpers (harness, references, kernel_cases, train_cases, recipe_runs) import by plain name under --import-mode=importlib
sys.path[:0] = [_HERE, *(os.path.join(_HERE, d) for d in ("kernels", "train", "attention", "recipes"))]
if not torch.cuda.is_available():  # run the Triton kernels under the CPU interpreter (set before triton imports)
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

import hf_attn  # noqa: E402,F401  (registers the variants)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """A Hub-compatible server on 127.0.0.1 (tests/hub_server.py); in-process clients upload over LFS."""
    from huggingface_hub import constants

    from hub_server import HubServer

    xet = constants.HF_HUB_DISABLE_XET
    constants.HF_HUB_DISABLE_XET = True  # the test server speaks LFS, not Xet
    with HubServer(tmp_path_factory.mktemp("hub"), token="hf_test_write_token") as server:
        yield server
    constants.HF_HUB_DISABLE_XET = xet


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory):
    """A from_pretrained folder: a tiny random Llama with SmolLM2's tokenizer (stands in for SmolLM2)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

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


@pytest.fixture(scope="session")
def smollm2_toy(tmp_path_factory) -> Path:
    """SmolLM2-135M cut to its first two decoder layers: real attention patterns at toy cost."""
    from hf_attn.assets import smollm2_path

    src = smollm2_path()
    out = tmp_path_factory.mktemp("smollm2_toy")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.model.layers = model.model.layers[:2]
    model.config.num_hidden_layers = 2
    model.config.layer_types = model.config.layer_types[:2] if getattr(model.config, "layer_types", None) else None
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, out / f)
    return out
