"""Shared tiny training configs for tests/train (importable by name: tests/conftest.py puts this folder on sys.path)."""
from pathlib import Path

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
