"""Entropies of attention maps: which heads spread information, which focus it.

- `entanglement_entropy`: von Neumann entropy of the normalised singular spectrum of a `(Tq, Tk)` map,
  `S = -sum p_i log p_i`, `p_i = s_i^2 / sum s^2`. 0 for a rank-one map (every query reads the same
  mixture), `log(min(Tq, Tk))` when the map spreads evenly over orthogonal directions (a permutation).
- `attention_entropy`: mean Shannon entropy of the rows (how many keys each query reads).
Both take `(..., Tq, Tk)` and return `(...)`, so `(B, H, Tq, Tk)` gives one value per batch item and head.
"""
from __future__ import annotations

import torch


def entanglement_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Von Neumann entropy (nats) of the normalised singular spectrum of each `(Tq, Tk)` map."""
    s = torch.linalg.svdvals(attn.double())
    p = s**2 / (s**2).sum(-1, keepdim=True).clamp_min(1e-300)
    return -(p * p.clamp_min(1e-300).log()).sum(-1).to(attn.dtype if attn.is_floating_point() else torch.float32)


def attention_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Mean row entropy (nats) of row-stochastic maps; rows that are all zero (no visible key) are skipped."""
    a = attn.double()
    row = -(a * a.clamp_min(1e-300).log()).sum(-1)
    live = (a.sum(-1) > 0).double()
    return ((row * live).sum(-1) / live.sum(-1).clamp_min(1)).to(torch.float32)


def head_entropies(attentions, kind: str = "entanglement") -> torch.Tensor:
    """`(layers, heads)` entropies averaged over the batch, from a model's `output_attentions` tuple."""
    fn = {"entanglement": entanglement_entropy, "attention": attention_entropy}.get(kind)
    if fn is None:
        raise ValueError(f"kind must be 'entanglement' or 'attention', got {kind!r}.")
    if not attentions or any(a is None for a in attentions):
        raise ValueError(
            "No attention maps: run the model with output_attentions=True on a variant that can materialise "
            "them (eager, holo, performer, gauge)."
        )
    return torch.stack([fn(a.float()).mean(0) for a in attentions])
