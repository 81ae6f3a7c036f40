"""`PrismaticConfig`: every knob of Prismatic v2 and v3 with their defaults (docs/prismatic.md).

One config for both versions (`version="v2" | "v3"`): v3 reuses v2's expert views and router and only adds
the position-encoding gate, so splitting them would duplicate every router/perturbation field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from hf_attn.utils import HfAttnError

from ..base import WrapperConfig

VERSIONS = ("v2", "v3")
STRATEGIES = ("dual_sided", "top_only", "bottom_only", "random")
MODES = ("attractive", "repulsive", "noise")
FOCAL_PATTERNS = ("radial_helical", "radial", "helical", "none")
ARCHITECTURES = ("rope", "alibi")
POOLINGS = ("auto", "first", "mean")
ROUTER_INITS = ("uniform", "clean")


def _one_of(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise HfAttnError(f"PrismaticConfig.{name}={value!r} is not valid; choose one of {', '.join(map(repr, allowed))}.")


@dataclass
class PrismaticConfig(WrapperConfig):
    """Prismatic: K expert views of one pretrained module, soft-merged (SMEAR) by a learned router."""

    version: str = field(default="v2", metadata={"help": "'v2': experts are sparse perturbed views of the module "
                         "(SMEAR-merged, Muqeeth et al. 2023). 'v3': attention experts that differ in position encoding, RoPE vs ALiBi."})
    num_experts: int = field(default=3, metadata={"help": "K expert views; expert 0 is always the clean base module."})
    perturbation_scale: float = field(default=0.8, metadata={"help": "Perturbation size relative to |W| (0.8 = 80% "
                                      "suppression/amplification). 0 makes every view equal to the base."})
    sparsity: float = field(default=0.1, metadata={"help": "Fraction of each tensor's elements perturbed (dual_sided: "
                            "half from the top of the magnitude ranking, half from the bottom)."})
    perturbation_strategy: str = field(default="dual_sided", metadata={"help": "Which elements: dual_sided | "
                                       "top_only | bottom_only | random."})
    perturb_by_magnitude: bool = field(default=True, metadata={"help": "False is the same as "
                                       "perturbation_strategy='random' (the magnitude ablation)."})
    perturbation_mode: str = field(default="attractive", metadata={"help": "attractive: top suppressed W - s*W, "
                                   "bottom amplified W + s*W; repulsive: the opposite; noise: W + s*|W|*N(0,1) (seeded)."})
    focal_pattern: str = field(default="radial_helical", metadata={"help": "Modulation of the perturbation along "
                               "each tensor's flat index: radial_helical | radial | helical | none."})
    focal_length: float = field(default=math.pi * 100, metadata={"help": "Radial lens decay exp(-distance/focal_length)."})
    helical_wavelength: float = field(default=math.pi * 1000, metadata={"help": "Helical wave "
                                      "cos(2*pi*distance/wavelength + phase), phase = 2*pi*expert/K."})
    seed: int = field(default=0, metadata={"help": "Seed of the 'random' strategy and 'noise' mode (per tensor and "
                      "expert), so views are deterministic given the weights and the config."})
    mask_refresh_steps: int = field(default=100, metadata={"help": "Re-rank the magnitudes (which elements are "
                                    "perturbed) after this many base-weight updates; the perturbation values always "
                                    "follow the current weights. 1 = re-rank at every forward. 100: 0.5% of "
                                    "the selection moves in 100 steps at lr 2e-5 (docs/prismatic.md) and the step is "
                                    "1.39x instead of 2.1-2.4x the base on an H100."})
    router_pooling: str = field(default="auto", metadata={"help": "Router input per sequence: 'first' real token "
                                "(causal-safe, cache-safe), 'mean' of real tokens (leaks the future in a decoder), "
                                "'auto' = mean in encoders, first in decoders."})
    router_init: str = field(default="clean", metadata={"help": "'clean': bias so expert 0 starts at "
                             "router_init_weight; 'uniform': every expert 1/K (SMEAR's init)."})
    router_init_weight: float = field(default=0.9, metadata={"help": "Starting weight of expert 0 with router_init='clean'."})
    router_temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of the router logits."})
    router_lr_scale: float = field(default=1.0, metadata={"help": "Learning rate of the routers relative to the "
                                   "optimizer's (the trainer's param_groups): a full fine-tune at lr 2e-5 trains "
                                   "the fresh routers at 50x, 1e-3."})
    collapse_threshold: float = field(default=0.95, metadata={"help": "Warn when one expert holds more than this share..."})
    collapse_steps: int = field(default=100, metadata={"help": "...for this many consecutive training forwards."})
    architectures: list[str] = field(default_factory=lambda: ["rope", "alibi"], metadata={"help": "v3: position "
                                     "encoding of expert i is architectures[i % len]; RoPE is used when the RoPE "
                                     "experts' total weight > 0.5, else ALiBi. Expert 0 must be 'rope' (the stock model)."})

    def __post_init__(self) -> None:
        _one_of("version", self.version, VERSIONS)
        _one_of("perturbation_strategy", self.perturbation_strategy, STRATEGIES)
        _one_of("perturbation_mode", self.perturbation_mode, MODES)
        _one_of("focal_pattern", self.focal_pattern, FOCAL_PATTERNS)
        _one_of("router_pooling", self.router_pooling, POOLINGS)
        _one_of("router_init", self.router_init, ROUTER_INITS)
        if not isinstance(self.num_experts, int) or self.num_experts < 2:
            raise HfAttnError(f"PrismaticConfig.num_experts must be an integer >= 2 (one clean + perturbed views), "
                              f"got {self.num_experts!r}.")
        if not 0.0 < self.sparsity <= 1.0:
            raise HfAttnError(f"PrismaticConfig.sparsity must be in (0, 1], got {self.sparsity}.")
        if self.perturbation_scale < 0:
            raise HfAttnError(f"PrismaticConfig.perturbation_scale must be >= 0, got {self.perturbation_scale}.")
        for name in ("focal_length", "helical_wavelength", "router_temperature", "router_lr_scale"):
            if getattr(self, name) <= 0:
                raise HfAttnError(f"PrismaticConfig.{name} must be > 0, got {getattr(self, name)}.")
        if self.mask_refresh_steps < 1 or self.collapse_steps < 1:
            raise HfAttnError("PrismaticConfig.mask_refresh_steps and collapse_steps must be >= 1.")
        if not 0.0 < self.router_init_weight < 1.0:
            raise HfAttnError(f"PrismaticConfig.router_init_weight must be in (0, 1), got {self.router_init_weight}.")
        if not 0.5 < self.collapse_threshold <= 1.0:
            raise HfAttnError(f"PrismaticConfig.collapse_threshold must be in (0.5, 1], got {self.collapse_threshold}.")
        self.architectures = list(self.architectures)
        if not self.architectures:
            raise HfAttnError("PrismaticConfig.architectures must name at least one of 'rope', 'alibi'.")
        for arch in self.architectures:
            _one_of("architectures[...]", arch, ARCHITECTURES)
        if self.version == "v3" and self.architectures[0] != "rope":
            raise HfAttnError("PrismaticConfig.architectures[0] must be 'rope' for v3: expert 0 is the clean, "
                              "stock (RoPE) model. Reorder it, e.g. ['rope', 'alibi'].")
        if not self.perturb_by_magnitude:
            self.perturbation_strategy = "random"

    def param_groups(self, model, lr: float) -> list[dict]:
        """The routers at lr x router_lr_scale (the trainer puts every other trainable weight at lr)."""
        return [{"params": [p for n, p in model.named_parameters() if ".router." in n], "lr": lr * self.router_lr_scale}]

    def architecture(self, expert: int) -> str:
        """Position encoding of `expert` (v3 cycles `architectures`)."""
        return self.architectures[expert % len(self.architectures)]
