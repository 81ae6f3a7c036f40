"""What both modulators share: the list of blocks they act on and a sample of the states they produce."""
from __future__ import annotations

import math

import torch

from ..base import WrapperLayer


def logit(p: float) -> float:
    """Inverse sigmoid: the logit that starts an alpha at `p`."""
    return math.log(p / (1 - p))


class ModulatorModule(WrapperLayer):
    """Base of the two modulators: one entry per modulated block, in the order of `layer_names`.

    It is attached to the model as a submodule (so optimisers and `wrapper_state_dict` see its parameters)
    and called from forward pre-hooks on the blocks; it has no `base_layer`.
    """

    def __init__(self, layer_names: list[str], track_cv: bool, cv_samples: int):
        super().__init__()
        self.layer_names = list(layer_names)
        self.track_cv = track_cv
        self.cv_samples = cv_samples
        self.recorded: dict[int, torch.Tensor] = {}

    def record(self, layer_idx: int, hidden: torch.Tensor) -> None:
        """Keep up to `cv_samples` token vectors of this block's modulated input (detached, fp32, CPU)."""
        if not self.track_cv:
            return
        flat = hidden.detach().reshape(-1, hidden.shape[-1])
        if flat.shape[0] > self.cv_samples:
            flat = flat[torch.randperm(flat.shape[0], device=flat.device)[: self.cv_samples]]
        self.recorded[layer_idx] = flat.float().cpu()

    def alphas(self) -> torch.Tensor:
        """Current alphas: `(n_layers,)` (residual) or `(n_layers, n_experts)` (field)."""
        raise NotImplementedError

    def health_metrics(self) -> dict[str, float]:
        """Modulator-specific numbers for `modulator_health` (alphas, validity, geometry)."""
        raise NotImplementedError
