"""A test-only wrapper (`toy_lowrank`: a low-rank residual on chosen Linear layers) registered through the
public wrapper API, so the checkpoint and Hub tests cover a wrapper with its own weights even before the
real wrappers are merged. Fresh test processes import this module to register it again."""
from dataclasses import dataclass, field

import torch

from hf_attn.adapters import WrapperConfig, WrapperLayer, WrapperSpec, find_targets, register_wrapper, replace_module


@dataclass
class ToyLowRankConfig(WrapperConfig):
    rank: int = field(default=2, metadata={"help": "rank of the residual update"})


class ToyLowRank(WrapperLayer):
    def __init__(self, base: torch.nn.Linear, rank: int):
        super().__init__()
        self.base_layer = base
        self.down = torch.nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
        self.up = torch.nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base_layer(x) + x @ self.down.T @ self.up.T


def _apply(model, config):
    names = find_targets(model, config.target_modules or ["o_proj", "o"], (torch.nn.Linear,))
    return [replace_module(model, n, ToyLowRank(model.get_submodule(n), config.rank)) for n in names]


register_wrapper(WrapperSpec("toy_lowrank", ToyLowRankConfig, _apply))
