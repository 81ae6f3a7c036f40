"""The HRR math holo attention is built from: real-DFT spectra, binding and unbinding (the reference).

Plate, "Holographic reduced representations" (1995): binding is circular convolution, unbinding circular
correlation; both are elementwise products of spectra. The PyTorch path (`attention.py`) and the Triton
kernels (`kernel.py`) compute the same quantities.
"""
from __future__ import annotations

import math

import torch

from ...utils import compile_constant

SOFT = 0.1  # default `config.holo_soft`: bins weaker than SOFT x the RMS bin magnitude are damped, not made unit size


@compile_constant
def dft_matrices(head_dim: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Real DFT pair: `x @ fwd = [Re X | Im X]` (D x 2F) and `[Re X | Im X] @ inv = x` (2F x D), F = D//2 + 1.

    Spectra as real matmuls instead of complex FFTs: tensor-core friendly, and every later step (binding,
    prefix sums, retrieval) stays on real tensors.
    """
    d, f = head_dim, head_dim // 2 + 1
    ang = 2 * math.pi * torch.arange(d, dtype=torch.float64)[:, None] * torch.arange(f, dtype=torch.float64) / d
    fwd = torch.cat([torch.cos(ang), -torch.sin(ang)], 1)
    w = torch.full((f, 1), 2.0, dtype=torch.float64)
    w[0] = 1.0
    if d % 2 == 0:
        w[-1] = 1.0
    inv = torch.cat([w * torch.cos(ang.T), -w * torch.sin(ang.T)], 0) / d
    return fwd.float().to(device), inv.float().to(device)


def spectrum(x: torch.Tensor, project: bool, soft: float = SOFT) -> tuple[torch.Tensor, torch.Tensor]:
    """`(Re X, Im X)` of `X = rfft(x)`, optionally projected to (soft) unit magnitude.

    The projection is `X / sqrt(|X|^2 + soft^2 * |x|^2)` (`|x|^2` is the mean bin power, by Parseval). A hard
    `X / |X|` gives a near-empty bin a phase set by rounding noise (bf16 logits then drift by 30% on small
    models); the soft floor keeps bins at >= the RMS magnitude within 0.5% of unit size (soft 0.1). The floor
    also bounds how much an input error grows: a bin's phase moves by up to `error / soft` (its gradient by
    `1 / soft^2`), which is where holo's bf16 error comes from (the rounding of q and k before attention;
    docs/kernels.md). A larger `soft` trades exact unbinding for robustness to that rounding.
    """
    return _stacked_spectra((x,), (project,), soft)[0]


def spectra(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, project: bool,
            soft: float = SOFT) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`spectrum` of q and k (projected if `project`) and of v (never), as one matmul over the three stacked along
    the head dim (k and v alone where q holds other tokens): a one-token decoding step then runs one small GEMM
    per layer instead of three."""
    if q.shape[0] == k.shape[0] and q.shape[2:] == k.shape[2:]:
        return _stacked_spectra((q, k, v), (project, project, False), soft)
    return [spectrum(q, project, soft), *_stacked_spectra((k, v), (project, False), soft)]


def _stacked_spectra(xs: tuple[torch.Tensor, ...], projects: tuple[bool, ...],
                     soft: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`spectrum` of each of `xs`: one tensor `(..., D)`, or tensors `(B, H_i, T, D)` that differ only in their head
    count."""
    fwd, _ = dft_matrices(xs[0].shape[-1], str(xs[0].device))
    if len(xs) == 1:  # any shape (..., D)
        parts = (xs[0].float() @ fwd,)
    else:
        parts = (torch.cat(xs, 1).float() @ fwd).split([x.shape[1] for x in xs], 1)
    out = []
    for x, part, project in zip(xs, parts, projects):
        re, im = part.chunk(2, dim=-1)
        if project:
            scale = torch.rsqrt(re * re + im * im + soft**2 * x.float().square().sum(-1, keepdim=True) + 1e-12)
            re, im = re * scale, im * scale
        out.append((re, im))
    return out


def bind(k: tuple[torch.Tensor, torch.Tensor], v: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Circular convolution `k ⊛ v` as `[Re | Im]` of the spectrum product, `(..., 2F)`."""
    (kr, ki), (vr, vi) = k, v
    return torch.cat([kr * vr - ki * vi, kr * vi + ki * vr], -1)


def unbind(q: tuple[torch.Tensor, torch.Tensor], mem: torch.Tensor) -> torch.Tensor:
    """Circular correlation of `q` with the memory `[Re | Im]`, back in the time domain `(..., D)`."""
    qr, qi = q
    mr, mi = mem.chunk(2, dim=-1)
    _, inv = dft_matrices(2 * (qr.shape[-1] - 1), str(qr.device))
    return torch.cat([qr * mr + qi * mi, qr * mi - qi * mr], -1) @ inv
