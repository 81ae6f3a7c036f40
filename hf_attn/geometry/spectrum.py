"""Spectral summaries of point clouds and weight matrices.

- participation ratio of a covariance spectrum, (sum l)^2 / sum l^2: the number of directions that carry
  the variance (equals d for isotropic data, 1 for a line);
- dims needed for a fraction of the variance;
- singular-value statistics of a weight matrix: stable rank ||W||_F^2 / ||W||_2^2, participation ratio of
  the singular values, entropy effective rank exp(H(s / sum s)) (Roy & Vetterli 2007), 90%-energy rank,
  fraction of singular values above 1% of the largest, condition number.
"""
from __future__ import annotations

import torch


def covariance_eigenvalues(x: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (descending, float64) of the covariance of the rows of `x` (N, d)."""
    x = x.detach().to("cpu", torch.float64)
    xc = x - x.mean(0)
    return torch.linalg.eigvalsh(xc.T @ xc / x.shape[0]).flip(0).clamp_min(0)


def participation_ratio(x: torch.Tensor | None = None, eigenvalues: torch.Tensor | None = None) -> float:
    """(sum l)^2 / sum l^2 of the covariance spectrum of `x` (N, d), or of given `eigenvalues`."""
    lam = covariance_eigenvalues(x) if eigenvalues is None else eigenvalues.to(torch.float64)
    return float(lam.sum() ** 2 / (lam**2).sum().clamp_min(1e-300))


def variance_dims(eigenvalues: torch.Tensor, fractions=(0.80, 0.90, 0.95, 0.99)) -> dict[str, int]:
    """How many leading eigen-directions hold each fraction of the total variance."""
    cum = eigenvalues.to(torch.float64).cumsum(0) / eigenvalues.sum()
    n = len(cum)
    return {f"{round(f * 100)}%": min(int(torch.searchsorted(cum, torch.tensor(f - 1e-12, dtype=torch.float64))) + 1, n) for f in fractions}


def singular_value_stats(s: torch.Tensor) -> dict[str, float]:
    """Effective-rank numbers of a weight matrix from its singular values `s` (any order)."""
    s = s.detach().to("cpu", torch.float64).sort(descending=True).values
    top = float(s[0])
    if top <= 0:
        return {"stable_rank": 0.0, "pr": 0.0, "effective_rank": 0.0, "rank_90": 0, "active_frac": 0.0, "condition": float("inf"), "max_sv": 0.0}
    p = s / s.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    cum = s.cumsum(0) / s.sum()
    return {
        "stable_rank": float((s**2).sum() / top**2),
        "pr": float(s.sum() ** 2 / (s**2).sum()),
        "effective_rank": float(torch.tensor(entropy).exp()),
        "rank_90": min(int(torch.searchsorted(cum, torch.tensor(0.9 - 1e-12, dtype=torch.float64))) + 1, len(s)),
        "active_frac": float((s > 0.01 * top).double().mean()),
        "condition": float(top / max(float(s[-1]), 1e-300)),
        "max_sv": top,
    }
