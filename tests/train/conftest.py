import shutil
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from hf_attn.train import TrainConfig
from hf_attn.train.config import deep_merge

REPO = Path(__file__).resolve().parents[2]
TINY = {"model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2},
        "data": {"seq_len": 17, "batch_size": 2, "eval_batches": 2},
        "train": {"steps": 2, "log_every": 1, "eval_every": 2, "diag_every": 2, "diag_tokens": 8}}


def tiny_cfg(tmp_path, **sections) -> TrainConfig:
    """A CPU-fast config: one tiny layer, 2 steps; `sections` merge over it."""
    d = deep_merge(TINY, {"name": "t", "out_dir": str(tmp_path / "run"), **sections})
    return TrainConfig.from_dict(d)


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
