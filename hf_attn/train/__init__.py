"""Config-driven training for every registered attention variant and wrapper (`python -m hf_attn.train`)."""
from .config import DataConfig, ModelConfig, OptimConfig, TrainConfig, TrainLoopConfig
from .loop import train

__all__ = ["DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "TrainLoopConfig", "train"]
