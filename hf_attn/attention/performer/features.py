"""FAVOR+ positive random features (Choromanski et al. 2021) and their stabilisers: the reference math.

Shared by the PyTorch path (`attention.py`) and the Triton kernels (`kernel.py`).
"""
from __future__ import annotations

import functools
import math

import torch

from ...utils import HfAttnError, compile_constant

DEFAULT_NUM_FEATURES = 256
KEY_FLOOR = -60.0  # a key's log-features (after its stabiliser) never fall below this: e^-60 ~ 1e-26


@functools.lru_cache(maxsize=256)
def _features_cpu(head_dim: int, num_features: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(math.ceil(num_features / head_dim)):
        q, _ = torch.linalg.qr(torch.randn(head_dim, head_dim, generator=gen, dtype=torch.float64))
        blocks.append(q.T)
    w = torch.cat(blocks)[:num_features]
    norms = torch.randn(num_features, head_dim, generator=gen, dtype=torch.float64).norm(dim=1, keepdim=True)
    return (w * norms).float()


@compile_constant
def random_features(head_dim: int, num_features: int, seed: int, device) -> torch.Tensor:
    """Orthogonal random features `(m, D)`, deterministic in `(head_dim, m, seed)`; kept per device, so a
    forward uploads nothing (an upload per call also cannot be captured in a CUDA graph). Read-only."""
    return _features_cpu(head_dim, num_features, seed).to(device)


@compile_constant
def key_stabiliser_value(head_dim: int, num_features: int, seed: int) -> float:
    """`key_stabiliser` of those features as a float, computed once on the CPU (no device sync per call)."""
    return float(key_stabiliser(_features_cpu(head_dim, num_features, seed)))


def layer_settings(module) -> tuple[int, int]:
    """`(m, seed)` of the random features for this attention module: `config.performer_num_features` and
    `config.performer_seed` offset by the layer index, so every layer draws its own features."""
    cfg = getattr(module, "config", None)
    m = int(getattr(cfg, "performer_num_features", DEFAULT_NUM_FEATURES))
    if m < 1:
        raise HfAttnError(f"performer: config.performer_num_features must be >= 1, got {m}; set a positive count.")
    return m, int(getattr(cfg, "performer_seed", 0)) + 1009 * int(getattr(module, "layer_idx", 0) or 0)


def key_stabiliser(w: torch.Tensor) -> torch.Tensor:
    """`c = max_i |W_i|^2 / 4`, subtracted from every key's log-features.

    `W_i.x - |x|^2/2 <= |W_i|^2 / 2 = 2c` for any x, so features stay below `e^c` (no overflow), and typical
    keys (log-features near 0) sit ~c nats above underflow (c ~ 44 at head_dim 128, where the bound `2c` itself
    left them below fp32's smallest normal). It depends on no token, so causality is exact. Learned features
    `(H, m, D)` (one set per key/value head) get one constant per head, `(H, 1, 1)`, from the detached `W`.
    """
    sq = w.detach().double().norm(dim=-1) ** 2
    if w.dim() == 2:
        return sq.max().float() / 4
    return (sq.amax(-1).float() / 4).view(-1, 1, 1)


def stabilised_features(x: torch.Tensor, w: torch.Tensor, is_query: bool,
                        key_stab: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive features of `x (B, H, T, D)` already scaled by `scaling^(1/2)`, and the stabiliser taken out.

    `phi(q).phi(k)` estimates `exp(q'.k' - stab_q - stab_k)`; the window hybrid (`attention/window.py`) needs
    the stabilisers to put it on the softmax scale. `w` is `(m, D)` (shared by all heads) or `(H, m, D)`
    (learned, one per head of `x`).

    A query's features are divided by their largest value (a per-query constant, which cancels between the
    numerator and the denominator exactly), so the largest is 1/sqrt(m) whatever |q| is. Stabilising by the
    projection alone left `exp(-|q|^2/2)` in, and SmolLM2's queries (|q|^2/2 ~ 60 after scaling) then gave
    denominators of 1e-43 and infinite gradients in the first steps of a recovery fine-tune.

    Keys' log-features are floored at `KEY_FLOOR` below their stabiliser. Keys of large norm otherwise have
    features so small that a query seeing only such keys gets a subnormal denominator (8e-40 in a SmolLM2-135M
    performer conversion) and the division's gradient (`out / den`) overflows: the attention transfer turned NaN
    at its 18th step. With the floor the denominator is >= e^-60 / m; a floored key weighs
    ~e^-60 of the query's largest feature, which changes nothing a softmax would notice.

    `key_stab`: `key_stabiliser(w)` as a float where it is known (`key_stabiliser_value` of random features), so
    a compiled decoding step does not recompute it from `w` per layer and token.
    """
    proj = x @ w.T if w.dim() == 2 else torch.einsum("bhtd,hmd->bhtm", x, w.to(x.dtype))
    log_f = proj - x.pow(2).sum(-1, keepdim=True) / 2
    if is_query:
        stab = log_f.amax(-1, keepdim=True).detach()
        return torch.exp(log_f - stab) / math.sqrt(w.shape[-2]), stab
    stab = key_stabiliser(w) if key_stab is None else key_stab
    return torch.exp((log_f - stab).clamp_min(KEY_FLOOR)) / math.sqrt(w.shape[-2]), stab


def feature_map(x: torch.Tensor, w: torch.Tensor, is_query: bool, key_stab: float | None = None) -> torch.Tensor:
    """`stabilised_features` without the stabiliser (what the pure performer needs: it cancels)."""
    return stabilised_features(x, w, is_query, key_stab)[0]
