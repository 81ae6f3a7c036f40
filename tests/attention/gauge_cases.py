"""A stand-in for gauge's learned wrapper, shared by the gauge attention and kernel tests."""
import torch

from hf_attn.attention.gauge import Beliefs


class RandomBeliefs:
    """A stand-in for the learned wrapper: random frames and per-token variances (per block or per dim)."""

    def __init__(self, settings, per_block=True, seed=0):
        self.settings, self.per_block, self.g = settings, per_block, torch.Generator().manual_seed(seed)
        self.made = {}

    def _side(self, x, name):
        n = self.settings.layout.n_blocks if self.per_block else x.shape[-1]
        var = torch.rand(*x.shape[:3], n, generator=self.g, dtype=torch.float64) + 0.5
        phi = torch.randn(*x.shape[:3], 3, generator=self.g, dtype=torch.float64)
        b = Beliefs(x.double(), var.to(x.device), phi.to(x.device), self.per_block)
        self.made[name] = b
        return b

    def beliefs(self, query, key):
        return self._side(query, "q"), self._side(key, "k")
