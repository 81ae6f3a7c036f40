"""Expert views of one tensor: sparse, magnitude-aware, focally modulated perturbations.

View k of a weight W is `W + C_k * g(W)` with `g(W) = W` (attractive/repulsive) or `|W|` (noise) and a
coefficient tensor `C_k = scale * sign_mask * modulation_k [* noise_k]` that is zero outside the selected
elements; `C_0 = 0` (expert 0 is the clean module). Because the routing weights sum to one, the soft-merged
weight is `W + (sum_k r_k C_k) * g(W)`: K views are never materialised, only one weighted sum of the
coefficients and one multiply-add per tensor.

`C_k` depends on the weights only through the magnitude ranking, so `ViewCache` keeps it until the base
weight changes (tracked with the tensor's in-place version counter; every `mask_refresh_steps` changes it is
rebuilt), while the perturbation *values* always follow the current W: a frozen base pays the selection
once, a trained one once per optimiser step at most (two top-k per tensor; the focal patterns do not depend
on the weights and are computed once; no Python loop over elements).
"""
from __future__ import annotations

import math
import zlib

import torch

from .config import PrismaticConfig

# (top band sign, bottom band sign) per mode; 'random' selections use the top sign.
_SIGNS = {"attractive": (-1.0, 1.0), "repulsive": (1.0, -1.0), "noise": (1.0, 1.0)}


def _generator(config: PrismaticConfig, name: str, expert: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{config.seed}/{name}/{expert}".encode()))


def band_sizes(numel: int, config: PrismaticConfig) -> tuple[int, int]:
    """(top, bottom) element counts: round(sparsity * numel) in all, split evenly for dual_sided."""
    total = round(config.sparsity * numel)
    if config.perturbation_strategy == "dual_sided":
        return total // 2 + total % 2, total // 2
    if config.perturbation_strategy == "top_only":
        return total, 0
    if config.perturbation_strategy == "bottom_only":
        return 0, total
    return total, 0  # random: counted as one band


def sign_mask(w: torch.Tensor, config: PrismaticConfig, name: str, expert: int) -> torch.Tensor:
    """Flat float tensor: the band's sign on each selected element of `w`, 0 elsewhere."""
    flat = w.detach().reshape(-1)
    n = flat.numel()
    n_top, n_bottom = band_sizes(n, config)
    top_sign, bottom_sign = _SIGNS[config.perturbation_mode]
    out = torch.zeros(n, dtype=torch.float32, device=w.device)
    if config.perturbation_strategy == "random":
        pick = torch.randperm(n, generator=_generator(config, name, expert))[:n_top].to(w.device)
        return out.index_fill_(0, pick, top_sign)
    mag = flat.abs().float()
    if n_top:
        out[torch.topk(mag, n_top, sorted=False).indices] = top_sign
    if n_bottom:  # exact counts even with ties (bf16 weights have many): topk, not a threshold
        out[torch.topk(mag, n_bottom, largest=False, sorted=False).indices] = bottom_sign
    return out


def modulation(numel: int, expert: int, config: PrismaticConfig, device=None) -> torch.Tensor:
    """The focal pattern of `expert` along the flat index (float32, `(numel,)`); weight-independent."""
    pattern = config.focal_pattern
    if pattern == "none":
        return torch.ones(numel, device=device)
    pos = torch.arange(numel, dtype=torch.float64, device=device)
    distance = (pos - expert / config.num_experts * numel).abs()
    out = torch.ones(numel, dtype=torch.float64, device=device)
    if pattern in ("radial", "radial_helical"):
        out = out * torch.exp(-distance / config.focal_length)
    if pattern in ("helical", "radial_helical"):
        phase = expert * 2 * math.pi / config.num_experts
        out = out * torch.cos(2 * math.pi * distance / config.helical_wavelength + phase)
    return out.float()


def coefficients(w: torch.Tensor, config: PrismaticConfig, name: str, patterns=None) -> torch.Tensor:
    """`(K - 1, *w.shape)` coefficients of experts 1..K-1 in w's dtype (no gradient).

    `patterns(numel, expert, device)` may supply cached focal patterns (they do not depend on the weights).
    """
    n = w.numel()
    patterns = patterns or (lambda numel, expert, device: modulation(numel, expert, config, device))
    shared = None if config.perturbation_strategy == "random" else sign_mask(w, config, name, 0)
    rows = []
    for expert in range(1, config.num_experts):
        mask = shared if shared is not None else sign_mask(w, config, name, expert)
        c = config.perturbation_scale * mask * patterns(n, expert, w.device)
        if config.perturbation_mode == "noise":
            c = c * torch.randn(n, generator=_generator(config, name, expert)).to(w.device)
        rows.append(c)
    return torch.stack(rows).to(w.dtype).view(config.num_experts - 1, *w.shape)


def scale_base(w: torch.Tensor, config: PrismaticConfig) -> torch.Tensor:
    """g(W): what the coefficients multiply."""
    return w.abs() if config.perturbation_mode == "noise" else w


def view(w: torch.Tensor, coef: torch.Tensor, expert: int, config: PrismaticConfig) -> torch.Tensor:
    """Expert `expert`'s view of `w` (expert 0 is `w` itself)."""
    return w if expert == 0 else w + coef[expert - 1] * scale_base(w, config)


def merge(w: torch.Tensor, coef: torch.Tensor, routing: torch.Tensor, config: PrismaticConfig) -> torch.Tensor:
    """SMEAR merge `sum_k r_k view_k`: routing `(K,)` gives `w.shape`, `(B, K)` gives `(B, *w.shape)`."""
    r = routing[..., 1:].to(w.dtype)
    delta = (r @ coef.reshape(coef.shape[0], -1)).reshape(*r.shape[:-1], *w.shape)
    return w + delta * scale_base(w, config)


class ViewCache:
    """Coefficients per tensor name, rebuilt when the base weight changed `mask_refresh_steps` times."""

    def __init__(self, config: PrismaticConfig):
        self.config = config
        self._entries: dict[str, tuple[torch.Tensor, tuple, int]] = {}
        self._patterns: dict[tuple, torch.Tensor] = {}

    def pattern(self, numel: int, expert: int, device) -> torch.Tensor:
        """The focal/helical modulation pattern of one expert for `numel` elements, computed once per device."""
        key = (numel, expert, str(device))
        if key not in self._patterns:
            self._patterns[key] = modulation(numel, expert, self.config, device)
        return self._patterns[key]

    def get(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """Perturbation coefficients of tensor `name`, re-ranked only after `mask_refresh_steps` in-place updates of
        `w`."""
        key = (w.data_ptr(), w._version, w.device, w.dtype, tuple(w.shape))
        entry = self._entries.get(name)
        if entry is not None:
            coef, old_key, changes = entry
            if old_key == key:
                return coef
            same_tensor = old_key[0] == key[0] and old_key[2:] == key[2:]
            if same_tensor and changes + 1 < self.config.mask_refresh_steps:
                self._entries[name] = (coef, key, changes + 1)
                return coef
        with torch.no_grad():
            coef = coefficients(w, self.config, name, self.pattern)
        self._entries[name] = (coef, key, 0)
        return coef
