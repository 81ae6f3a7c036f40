"""A test-only wrapper (`toy_lowrank`: a low-rank residual on chosen Linear layers) registered through the
public wrapper API, so the checkpoint and Hub tests cover a wrapper with its own weights even before the
real wrappers are merged. Fresh test processes import this module to register it again. Also: the
round-trip cases (`wrappable`) and wrapped tiny models with trained-looking wrapper weights (`wrapped`)."""
from dataclasses import dataclass, field

import torch

import hf_attn
from harness import tiny_model
from hf_attn.adapters import (
    WrapperConfig,
    WrapperLayer,
    WrapperSpec,
    find_targets,
    list_wrappers,
    register_wrapper,
    replace_module,
    wrapper_state_dict,
)


@dataclass
class ToyLowRankConfig(WrapperConfig):
    """A low-rank residual `x @ down.T @ up.T` added to each target (starts as the identity: `up` = 0)."""

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


@dataclass
class ScaleConfig(WrapperConfig):
    """A learned per-output scale on each target (`test_scale`): the smallest wrapper with a diagnostics hook."""

    init: float = field(default=1.0, metadata={"help": "initial output scale"})


class ScaleLayer(WrapperLayer):
    def __init__(self, base: torch.nn.Linear, init: float):
        super().__init__()
        self.base_layer = base
        self.scale = torch.nn.Parameter(torch.full((base.out_features,), init))

    def forward(self, x):
        return self.base_layer(x) * self.scale

    def hf_attn_diagnostics(self):
        return {"scale_mean": self.scale.mean().item()}


register_wrapper(WrapperSpec("test_scale", ScaleConfig, lambda m, c: [
    replace_module(m, n, ScaleLayer(m.get_submodule(n), c.init))
    for n in find_targets(m, c.target_modules or ["v_proj"], (torch.nn.Linear,))]))


def wrappable() -> list[str]:
    """Registered wrappers (shipped ones, and the test-only toy) that wrap a tiny Llama with their defaults."""
    names = []
    for name, spec in sorted(list_wrappers().items()):
        if not (spec.config_cls.__module__.startswith("hf_attn.") or name == "toy_lowrank"):
            continue
        try:
            hf_attn.wrap(tiny_model("llama", "sdpa"), spec.config_cls())
        except Exception:  # a wrapper that needs settings a tiny Llama lacks is not a round-trip case here
            continue
        names.append(name)
    return names


def wrapped(arch: str, name: str, attn: str = "sdpa"):
    """A tiny model wrapped with `name` whose wrapper tensors are moved off their initial values."""
    model = hf_attn.wrap(tiny_model(arch, attn), list_wrappers()[name].config_cls())
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key in wrapper_state_dict(model):  # parameters only: buffers (e.g. validity tracking) stay as they are
            if key in params and params[key].is_floating_point():
                params[key].add_(0.05 * torch.randn_like(params[key]))
    return model
