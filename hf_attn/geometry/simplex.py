"""Cayley-Menger simplex volumes and the pentachoron coefficient of variation.

The Cayley-Menger determinant gives the squared volume of a k-simplex from its pairwise squared distances
alone, so it is independent of the ambient dimension and differentiable (the field modulator trains through
it). `pentachoron_cv` is the health number: the std/mean of the volumes of random 5-point simplices
drawn from a point cloud; trained token embeddings of T5 and Qwen sit in `CV_BAND`.
"""
from __future__ import annotations

import math
from itertools import combinations

import torch

CV_BAND = (0.20, 0.23)  # pentachoron CV band reported for T5 and Qwen token embeddings


def pairwise_sq_distances(verts: torch.Tensor) -> torch.Tensor:
    """`(..., n, d)` points -> `(..., n, n)` squared distances, from the Gram matrix, clamped at 0."""
    gram = verts @ verts.transpose(-1, -2)
    sq = torch.diagonal(gram, dim1=-2, dim2=-1)
    return (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * gram).clamp_min(0)


def _cm_prefactor(k: int) -> float:
    return (-1.0) ** (k + 1) / (2.0**k * math.factorial(k) ** 2)


def cayley_menger_volume_sq(verts: torch.Tensor) -> torch.Tensor:
    """Squared volume of the simplices `(..., k+1, d)` -> `(...,)` via the bordered distance determinant.

    Degenerate simplices give 0 up to rounding (a tiny negative value is possible; `cayley_menger_volume`
    clamps it). Compute in float64 when the points are far from unit scale.
    """
    return cayley_menger_features(verts)[1]


def cayley_menger_features(verts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(d2_pairs (..., (k+1)k/2), vol2 (...,))`: the geometric features of a simplex."""
    n = verts.shape[-2]
    if n < 2:
        raise ValueError(f"A simplex needs at least 2 vertices, got {n}.")
    d2 = pairwise_sq_distances(verts)
    border = torch.ones(*d2.shape[:-2], n + 1, n + 1, dtype=d2.dtype, device=d2.device)
    border[..., 0, 0] = 0
    border[..., 1:, 1:] = d2
    vol2 = _cm_prefactor(n - 1) * torch.linalg.det(border)
    i, j = zip(*combinations(range(n), 2))
    return d2[..., list(i), list(j)], vol2


def cayley_menger_volume(verts: torch.Tensor) -> torch.Tensor:
    """Volume of the simplices `(..., k+1, d)` -> `(...,)`; 0 for degenerate ones."""
    return cayley_menger_volume_sq(verts).clamp_min(0).sqrt()


def regular_simplex_volume(k: int, edge: float = 1.0) -> float:
    """Closed form: a regular k-simplex with edge `a` has volume a^k / k! * sqrt((k+1) / 2^k)."""
    return edge**k / math.factorial(k) * math.sqrt((k + 1) / 2**k)


def regular_simplex(k: int, dim: int, edge: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`(k+1, dim)` vertices of a regular k-simplex with the given edge, centred at the origin.

    Built from the scaled standard basis of R^(k+1) (all edges equal), rotated into its own k-dimensional
    span and zero-padded to `dim`.
    """
    if dim < k:
        raise ValueError(f"A regular {k}-simplex needs dim >= {k}, got {dim}.")
    basis = torch.eye(k + 1, dtype=torch.float64) * (edge / math.sqrt(2))
    centred = basis - basis.mean(0)
    _, _, vh = torch.linalg.svd(centred)
    coords = centred @ vh[:k].T  # (k+1, k): same distances, k coordinates
    out = torch.zeros(k + 1, dim, dtype=torch.float64)
    out[:, :k] = coords
    return out.to(dtype)


def _sample_simplices(n_points: int, n_simplices: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """`(n_simplices, k+1)` indices, distinct within each simplex."""
    if n_points < k + 1:
        raise ValueError(f"Need at least {k + 1} points for {k}-simplices, got {n_points}.")
    if n_points <= 4096:
        return torch.rand(n_simplices, n_points, generator=generator).argsort(-1)[:, : k + 1]
    idx = torch.randint(n_points, (n_simplices, k + 1), generator=generator)
    while True:
        dup = (idx.sort(-1).values.diff(dim=-1) == 0).any(-1)
        if not dup.any():
            return idx
        idx[dup] = torch.randint(n_points, (int(dup.sum()), k + 1), generator=generator)


def pentachoron_cv(
    points: torch.Tensor, n_simplices: int = 1000, seed: int = 0, k: int = 4, batch: int = 4096,
    rel_tol: float = 1e-6,
) -> dict[str, float]:
    """CV (std/mean) of the volumes of `n_simplices` random k-simplices (k=4: pentachora) from `points` (N, d).

    Returns `cv`, `mean_volume`, `valid_fraction` (simplices whose volume exceeds `rel_tol` x that of a
    regular simplex with the same mean edge) and `n_simplices`.
    """
    g = torch.Generator().manual_seed(seed)
    idx = _sample_simplices(points.shape[0], n_simplices, k, g)
    pts = points.detach().to("cpu", torch.float64)
    d2, vol2 = zip(*(cayley_menger_features(pts[chunk]) for chunk in idx.split(batch)))
    vols = torch.cat(vol2).clamp_min(0).sqrt()
    # Valid = not degenerate relative to its own size: rounding leaves flat simplices a tiny volume.
    mean_edge = torch.cat(d2).sqrt().mean(-1)
    valid = vols > rel_tol * regular_simplex_volume(k) * mean_edge**k
    v = vols[valid]
    if v.numel() < 2:
        return {"cv": float("nan"), "mean_volume": 0.0, "valid_fraction": float(valid.float().mean()), "n_simplices": n_simplices}
    return {
        "cv": float(v.std() / v.mean()),
        "mean_volume": float(v.mean()),
        "valid_fraction": float(valid.float().mean()),
        "n_simplices": n_simplices,
    }


def in_cv_band(cv: float, band: tuple[float, float] = CV_BAND) -> bool:
    """True when a pentachoron CV lies inside `band` (inclusive)."""
    return band[0] <= cv <= band[1]
