"""Gaussian beliefs per token and the two ways to score them: explicit KL and augmented inner products.

A belief is `q_i = N(mu_i, diag(var_i))` in a head's irrep blocks with a frame `phi_i` in so(3).
Transport `Omega_ij = R(phi_i) R(phi_j)^T` acts on each block by its Wigner-D matrix (identity on l = 0).
The score is `-KL(q_i || Omega_ij q_j) / kappa`.

- `kl_explicit`: the KL on the full `Tq x Tk` grid with the full transported covariance
  `Omega diag(var_j) Omega^T`; any diagonal variances. The reference and the fallback.
- `augmented`: valid when each block has one variance (`per_block=True`): then `Omega` leaves the covariance
  alone and, with `a_i = R(phi_i)^T mu_i` (each mean rotated into its own frame),
  `-KL_ij = a_i . (a_j / t_j) + sum_b u_ib / t_jb + c_j + const_i`, with `u_ib = -(|a_ib|^2 + d_b s_ib) / 2`
  and `c_j = -sum_b (|a_jb|^2 / t_jb + d_b log t_jb) / 2` (s, t: query and key block variances,
  d_b: block size). That is one inner product of augmented vectors, `[a, u, 1] . [a / t, 1 / t, c]`, which
  any softmax-attention kernel can run. With token-independent variances the `u` terms are per-query
  constants and drop out: `[a, 1] . [a / t, c]`, head_dim + 1 (+1 in half precision, see `augmented`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .irreps import IrrepLayout
from .so3 import wigner_d


@dataclass
class Beliefs:
    """Means `mu (B, H, T, D)`, variances `(B|1, H|1, T|1, n_blocks or D)`, frames `phi (B, H, T, 3)` or None."""

    mu: torch.Tensor
    var: torch.Tensor
    phi: torch.Tensor | None = None
    per_block: bool = True  # var has one value per irrep block (else one per dimension)

    def var_per_dim(self, layout: IrrepLayout) -> torch.Tensor:
        """The variance spread to one value per head dimension (a per-block variance repeated over its block)."""
        if not self.per_block:
            return self.var
        idx = torch.tensor(layout.block_of_dim(), device=self.var.device)
        return self.var.index_select(-1, idx)

    @property
    def token_independent(self) -> bool:
        """True when one variance serves every batch row and token (shape `(1, ., 1, .)`)."""
        return self.var.shape[0] == 1 and self.var.shape[-2] == 1


def rotate_into_frames(x: torch.Tensor, phi: torch.Tensor | None, layout: IrrepLayout) -> torch.Tensor:
    """`R(phi)^T x` block by block (blocks of one l share one Wigner-D); identity when phi is None."""
    if phi is None:
        return x
    parts, cache = [], {}
    for b in layout.blocks:
        xb = x[..., b.start : b.stop]
        if b.l > 0:
            if b.l not in cache:
                cache[b.l] = wigner_d(phi.to(x.dtype), b.l)
            xb = torch.einsum("...nm,...n->...m", cache[b.l], xb)  # D^T x
        parts.append(xb)
    return torch.cat(parts, -1)


def _transport(phi_q: torch.Tensor | None, phi_k: torch.Tensor | None, l: int, shape) -> torch.Tensor | None:
    """`Omega_ij` for one l: `(B, H, Tq, Tk, n, n)`, or None when both frames are identity."""
    if phi_q is None and phi_k is None:
        return None
    n = 2 * l + 1
    dq = wigner_d(phi_q, l) if phi_q is not None else torch.eye(n).expand(*shape[:3], n, n)
    dk = wigner_d(phi_k, l) if phi_k is not None else torch.eye(n).expand(*shape[:2], shape[3], n, n)
    return torch.einsum("bhimn,bhjkn->bhijmk", dq, dk.to(dq.dtype))


def kl_explicit(q: Beliefs, k: Beliefs, layout: IrrepLayout) -> torch.Tensor:
    """`KL(q_i || Omega_ij k_j)` for every pair: `(B, H, Tq, Tk)`; q and k must have the same heads.

    Memory `O(Tq * Tk * D)` (l >= 1 blocks with frames: `O(Tq * Tk * (2l+1)^2)` each).
    """
    vq, vk = q.var_per_dim(layout), k.var_per_dim(layout)
    shape = (q.mu.shape[0], q.mu.shape[1], q.mu.shape[2], k.mu.shape[2])
    total = torch.zeros(shape, dtype=q.mu.dtype, device=q.mu.device)
    for b in layout.blocks:
        sl = slice(b.start, b.stop)
        mq, mk = q.mu[..., sl], k.mu[..., sl]
        sq, sk = vq[..., sl].expand(*mq.shape), vk[..., sl].expand(*mk.shape)
        omega = _transport(q.phi, k.phi, b.l, shape) if b.l > 0 else None
        if omega is None:
            trace = (sq[..., :, None, :] / sk[..., None, :, :]).sum(-1)
            maha = ((mq[..., :, None, :] - mk[..., None, :, :]) ** 2 / sk[..., None, :, :]).sum(-1)
        else:
            omega = omega.to(mq.dtype)
            # tr(S'^-1 S_i) = sum_kl Omega_kl^2 s_ik / t_jl ; Mahalanobis in j's frame: (Omega^T m_i - m_j)^2 / t_j
            trace = torch.einsum("bhijkl,bhik,bhjl->bhij", omega**2, sq, 1 / sk)
            back = torch.einsum("bhijkl,bhik->bhijl", omega, mq)
            maha = ((back - mk[..., None, :, :]) ** 2 / sk[..., None, :, :]).sum(-1)
        logdet = sk.log().sum(-1)[..., None, :] - sq.log().sum(-1)[..., :, None]
        total = total + 0.5 * (trace + maha - b.dim + logdet)
    return total


@dataclass
class AugmentedParts:
    """The terms of `-KL_ij` up to per-query constants, as a flash kernel takes them:
    `q . k + q_extra . k_extra + c` (`augmented` concatenates them into one inner product for SDPA)."""

    q: torch.Tensor  # (B, Hq, Tq, D) query means in their own frames, a_i
    k: torch.Tensor  # (B, Hk, Tk, D) key means in their own frames over their variance, a_j / t_j
    c: torch.Tensor  # (B, Hk, Tk, 1) the key constant c_j
    q_extra: torch.Tensor | None  # (B, Hq, Tq, n_blocks) u_i with token-dependent variances, else None
    k_extra: torch.Tensor | None  # (B, Hk, Tk, n_blocks) 1 / t_j, or None


def augmented_parts(q: Beliefs, k: Beliefs, layout: IrrepLayout) -> AugmentedParts:
    """The augmented terms of `q`, `k` (module docstring); needs one variance per block."""
    if not (q.per_block and k.per_block):
        raise ValueError("augmented vectors need one variance per irrep block; use kl_explicit")
    dims = torch.tensor([b.dim for b in layout.blocks], dtype=q.mu.dtype, device=q.mu.device)
    idx = torch.tensor(layout.block_of_dim(), device=q.mu.device)
    a, b = rotate_into_frames(q.mu, q.phi, layout), rotate_into_frames(k.mu, k.phi, layout)
    inv_t = 1.0 / k.var
    sq_b = torch.zeros(*b.shape[:-1], layout.n_blocks, dtype=b.dtype, device=b.device)
    sq_b = sq_b.index_add(-1, idx, b * b)  # |b_jb|^2 per block
    c = -0.5 * (sq_b * inv_t + dims * k.var.log()).sum(-1, keepdim=True)
    kv = b * inv_t.index_select(-1, idx)
    if q.token_independent and k.token_independent:
        return AugmentedParts(a, kv, c, None, None)
    sa = torch.zeros(*a.shape[:-1], layout.n_blocks, dtype=a.dtype, device=a.device).index_add(-1, idx, a * a)
    return AugmentedParts(a, kv, c, -0.5 * (sa + dims * q.var), inv_t.expand(*kv.shape[:-1], layout.n_blocks))


def augmented(q: Beliefs, k: Beliefs, layout: IrrepLayout, split_constant: bool = False, multiple: int = 8):
    """Augmented query/key vectors `(B, Hq, Tq, A)`, `(B, Hk, Tk, A)` with `Q K^T = -KL + per-query const`.

    Needs one variance per block (`per_block=True`); heads may differ (GQA). `split_constant` writes the key
    constant `c_j` as a high and a low part, so half-precision inputs keep it to ~2^-16 relative instead
    of 2^-8. `c_j` is also shifted by the first key's value (a per-head constant that softmax ignores and
    that no later key can change, so causality and cached decoding stay exact).
    Both vectors are zero-padded to a multiple of `multiple` dims so flash/cuDNN kernels take them.
    """
    parts = augmented_parts(q, k, layout)
    c = parts.c - parts.c[..., :1, :].detach()  # a per-head constant from key 0: never from a future key
    ones_q = torch.ones(*parts.q.shape[:-1], 1, dtype=parts.q.dtype, device=parts.q.device)
    qa, ka = [parts.q], [parts.k]
    if parts.q_extra is not None:
        qa, ka = qa + [parts.q_extra], ka + [parts.k_extra]
    if split_constant:
        hi = c.bfloat16().to(c.dtype)
        qa, ka = qa + [ones_q, ones_q], ka + [hi, c - hi]
    else:
        qa, ka = qa + [ones_q], ka + [c]
    qa, ka = torch.cat(qa, -1), torch.cat(ka, -1)
    pad = -qa.shape[-1] % multiple
    if pad:
        qa, ka = torch.nn.functional.pad(qa, (0, pad)), torch.nn.functional.pad(ka, (0, pad))
    return qa, ka
