"""Wigner-D matrices: a real orthogonal representation of SO(3) for every l."""
import math

import pytest
import torch

from hf_attn.attention.gauge import generators, wigner_d


@pytest.mark.parametrize("l", [0, 1, 2, 3, 4])
def test_generators_satisfy_so3_commutators(l):
    gx, gy, gz = generators(l, torch.float64)
    for a, b, c in ((gx, gy, gz), (gy, gz, gx), (gz, gx, gy)):
        torch.testing.assert_close(a @ b - b @ a, c, atol=1e-12, rtol=0)
    torch.testing.assert_close(generators(l, torch.float64), -generators(l, torch.float64).transpose(1, 2))


@pytest.mark.parametrize("l", [0, 1, 2, 3])
def test_orthogonal_det_one_and_character(l):
    phi = torch.randn(50, 3, dtype=torch.float64) * 2
    d = wigner_d(phi, l)
    eye = torch.eye(2 * l + 1, dtype=torch.float64)
    torch.testing.assert_close(d @ d.transpose(-1, -2), eye.expand_as(d), atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(d), torch.ones(50, dtype=torch.float64))
    t = phi.norm(dim=-1)  # trace = spin-l character of a rotation by |phi|: identifies the irrep
    torch.testing.assert_close(d.diagonal(dim1=-2, dim2=-1).sum(-1), torch.sin((l + 0.5) * t) / torch.sin(t / 2))


@pytest.mark.parametrize("l", [1, 2])
def test_transport_is_identity_on_self_and_composes(l):
    phi = torch.randn(3, 3, dtype=torch.float64)
    r = wigner_d(phi, l)
    omega = lambda i, j: r[i] @ r[j].T  # noqa: E731  Omega_ij = R(phi_i) R(phi_j)^T
    eye = torch.eye(2 * l + 1, dtype=torch.float64)
    torch.testing.assert_close(omega(0, 0), eye)
    torch.testing.assert_close(omega(0, 1) @ omega(1, 2), omega(0, 2))
    torch.testing.assert_close(torch.linalg.det(omega(0, 2)), torch.tensor(1.0, dtype=torch.float64))


def test_wigner_d_is_a_homomorphism_along_one_axis():
    axis = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    axis = axis / axis.norm()
    a, b = wigner_d(0.7 * axis, 2), wigner_d(1.1 * axis, 2)
    torch.testing.assert_close(a @ b, wigner_d(1.8 * axis, 2))
    torch.testing.assert_close(wigner_d(2 * math.pi * axis, 1), torch.eye(3, dtype=torch.float64), atol=1e-10, rtol=0)


def test_gradients_flow_to_phi():
    phi = torch.randn(4, 3, requires_grad=True)
    (wigner_d(phi, 2) * torch.randn(4, 5, 5)).sum().backward()
    assert phi.grad is not None and phi.grad.abs().sum() > 0


def test_unknown_l_is_refused():
    with pytest.raises(ValueError, match="l must be"):
        generators(9)
