"""Real Wigner-D matrices of SO(3): `D^l(phi) = exp(sum_a phi_a G^l_a)` for any l.

`G^l_a` are the real, antisymmetric so(3) generators of the spin-l irrep (dimension 2l + 1), obtained from
the textbook complex angular-momentum matrices `J_z`, `J_+-` by the unitary change to real spherical
harmonics. They satisfy `[G_x, G_y] = G_z` (and cyclic), so `D^l` is a representation: orthogonal,
determinant 1, `D^l(0) = I`, and the trace of `D^l(phi)` is the spin-l character
`sin((l + 1/2) t) / sin(t / 2)` of a rotation by angle `t = |phi|` (the tests check all of these). The matrix
exponential keeps every l on one code path and is differentiable in `phi`.
"""
from __future__ import annotations

import functools
import math

import torch

MAX_L = 4  # irreps beyond l = 4 (dimension 9) are accepted nowhere else in hf-attn; raise it here if needed


@functools.lru_cache(maxsize=None)
def _generators64(l: int) -> torch.Tensor:
    n = 2 * l + 1
    m = torch.arange(-l, l + 1, dtype=torch.float64)
    jz = torch.diag(m).to(torch.complex128)
    jp = torch.zeros(n, n, dtype=torch.complex128)
    for i in range(n - 1):  # J_+ |m> = sqrt(l(l+1) - m(m+1)) |m+1>
        jp[i + 1, i] = math.sqrt(l * (l + 1) - m[i].item() * (m[i].item() + 1))
    jx, jy = (jp + jp.T) / 2, (jp - jp.T) / 2j
    u = _real_basis(l)
    gens = []
    for j in (jx, jy, jz):
        g = u @ (-1j * j) @ u.conj().T
        assert g.imag.abs().max() < 1e-12, "real-harmonic change of basis failed"
        gens.append(g.real)
    return torch.stack(gens)


def _real_basis(l: int) -> torch.Tensor:
    """Unitary `U` with rows = real spherical harmonics in the complex |l, m> basis (m = -l .. l)."""
    n = 2 * l + 1
    u = torch.zeros(n, n, dtype=torch.complex128)
    s = 1 / math.sqrt(2)
    for m in range(-l, l + 1):
        row, pos, neg = m + l, abs(m) + l, -abs(m) + l
        if m == 0:
            u[row, l] = 1
        elif m > 0:
            u[row, neg], u[row, pos] = s, (-1) ** m * s
        else:
            u[row, neg], u[row, pos] = 1j * s, -1j * (-1) ** m * s
    return u


def generators(l: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """`(3, 2l+1, 2l+1)` real antisymmetric generators `G_x, G_y, G_z` of the spin-l irrep."""
    if not isinstance(l, int) or not 0 <= l <= MAX_L:
        raise ValueError(f"l must be an integer in [0, {MAX_L}], got {l!r}.")
    return _generators64(l).to(dtype=dtype, device=device)


def wigner_d(phi: torch.Tensor, l: int) -> torch.Tensor:
    """Real Wigner-D matrices `(..., 2l+1, 2l+1)` of the rotations `phi (..., 3)` (axis-angle, so(3) coords)."""
    if l == 0:
        return torch.ones(*phi.shape[:-1], 1, 1, dtype=phi.dtype, device=phi.device)
    g = generators(l, phi.dtype, phi.device)
    return torch.linalg.matrix_exp(torch.einsum("...a,amn->...mn", phi, g))
