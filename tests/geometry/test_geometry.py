"""Cayley-Menger volumes, pentachoron CV and spectra against closed forms."""
import math

import pytest
import torch

from hf_attn.geometry import (
    cayley_menger_features,
    cayley_menger_volume,
    participation_ratio,
    pentachoron_cv,
    regular_simplex,
    regular_simplex_volume,
    singular_value_stats,
    variance_dims,
)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("edge", [1.0, 2.5])
def test_regular_simplex_volume_matches_closed_form(k, edge):
    verts = regular_simplex(k, dim=k + 3, edge=edge, dtype=torch.float64)
    d2, _ = cayley_menger_features(verts)
    torch.testing.assert_close(d2, torch.full_like(d2, edge**2))
    assert cayley_menger_volume(verts).item() == pytest.approx(regular_simplex_volume(k, edge), rel=1e-9)
    # Rotating and translating the simplex in a higher dimension changes nothing.
    q, _ = torch.linalg.qr(torch.randn(k + 3, k + 3, dtype=torch.float64))
    assert cayley_menger_volume(verts @ q + 3.0).item() == pytest.approx(regular_simplex_volume(k, edge), rel=1e-9)


def test_known_volumes_and_degenerate_simplices():
    right_triangle = torch.tensor([[0.0, 0, 0], [3, 0, 0], [0, 4, 0]], dtype=torch.float64)
    assert cayley_menger_volume(right_triangle).item() == pytest.approx(6.0)
    unit_corner = torch.cat([torch.zeros(1, 4), torch.eye(4)]).double()  # 4-simplex, volume 1/4!
    assert cayley_menger_volume(unit_corner).item() == pytest.approx(1 / 24)
    collinear = torch.tensor([[0.0, 0], [1, 1], [2, 2]], dtype=torch.float64)
    coplanar = torch.randn(5, 2, dtype=torch.float64) @ torch.randn(2, 16, dtype=torch.float64)  # 5 points in a plane
    repeated = torch.randn(1, 8, dtype=torch.float64).expand(5, 8)
    for pts in (collinear, coplanar, repeated):
        assert cayley_menger_volume(pts).item() == pytest.approx(0.0, abs=1e-6)


def test_batched_and_differentiable():
    verts = torch.randn(7, 3, 5, 8, dtype=torch.float64, requires_grad=True)
    vols = cayley_menger_volume(verts)
    assert vols.shape == (7, 3)
    # Gram-determinant form: vol^2 = det(E E^T) / (k!)^2 with E the edge vectors from vertex 0.
    edges = verts[..., 1:, :] - verts[..., :1, :]
    gram = torch.linalg.det(edges @ edges.transpose(-1, -2)) / math.factorial(4) ** 2
    torch.testing.assert_close(vols**2, gram)
    vols.sum().backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0


def test_pentachoron_cv_is_scale_invariant_and_seeded():
    pts = torch.randn(2000, 32)
    a = pentachoron_cv(pts, 300, seed=1)
    assert a == pentachoron_cv(pts, 300, seed=1)
    assert pentachoron_cv(pts * 7.0, 300, seed=1)["cv"] == pytest.approx(a["cv"], rel=1e-6)
    assert a["valid_fraction"] == 1.0 and 0 < a["cv"] < 1
    flat = torch.randn(2000, 3) @ torch.randn(3, 32)  # rank 3: every pentachoron is degenerate
    assert pentachoron_cv(flat, 100)["valid_fraction"] < 0.1


def test_spectrum_recovers_known_participation_ratio_and_ranks():
    d, n = 32, 20000
    std = torch.linspace(1, 0.05, d, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    x = (torch.randn(n, d, dtype=torch.float64) * std) @ q.T
    lam = std**2
    expected = float(lam.sum() ** 2 / (lam**2).sum())
    assert participation_ratio(x) == pytest.approx(expected, rel=0.05)
    assert participation_ratio(eigenvalues=torch.ones(10)) == pytest.approx(10.0)
    dims = variance_dims(lam)
    cum = lam.cumsum(0) / lam.sum()
    assert dims["90%"] == int((cum < 0.9).sum()) + 1

    s = torch.tensor([4.0, 2.0, 1.0, 1.0, 0.0])
    stats = singular_value_stats(s)
    assert stats["stable_rank"] == pytest.approx((16 + 4 + 1 + 1) / 16)
    assert stats["pr"] == pytest.approx(64 / 22)
    p = s[:4] / 8
    assert stats["effective_rank"] == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert stats["rank_90"] == 4 and stats["active_frac"] == pytest.approx(0.8)
