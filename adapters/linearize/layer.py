"""`LinearizeParts`: the learned tensors one attention module's variant reads at `module.hf_attn_parts`."""
from __future__ import annotations

import torch

from ..base import WrapperLayer


class LinearizeParts(WrapperLayer):
    """Learned parts of one attention module, added beside its weights (it stands in for nothing, so it has no
    `base_layer`); the attention function reads them (interface: `hf_attn/attention/common.py`).

    `features` (performer, `(Hkv, m, D)`), `q_map` / `k_map` (holo, `(Hq, D, Db)` / `(Hkv, D, Db)`) and
    `window_mix_logit` (`(Hq,)`, with a window) are Parameters, or None where the variant has no such part.
    """

    def __init__(self, **parts: torch.Tensor | None):
        super().__init__()
        for name in ("features", "q_map", "k_map", "window_mix_logit"):
            tensor = parts.pop(name, None)
            self.register_parameter(name, None if tensor is None else torch.nn.Parameter(tensor))
        if parts:
            raise TypeError(f"unknown parts {sorted(parts)}")

    def window_mix(self) -> torch.Tensor | None:
        """The variant's share per head, `sigmoid(window_mix_logit)` (None without a learned share)."""
        return None if self.window_mix_logit is None else torch.sigmoid(self.window_mix_logit.detach())
