"""Tensor-train (TT) math: TT-SVD of any tensor, TT-matrices, and applying TT-matrix cores to activations.

A d-way tensor `A[i1, ..., id]` in TT format is a chain of cores
`G_k` of shape `(r_{k-1}, n_k, r_k)` (r_0 = r_d = 1) with `A[i1..id] = G_1[:, i1, :] @ ... @ G_d[:, id, :]`.
`to_tensor_train` computes the cores by sequential truncated SVDs (Oseledets 2011, TT-SVD).

A TT-matrix stores a weight `W` of shape `(M, N)`, `M = m_1...m_d`, `N = n_1...n_d`, as cores of shape
`(r_{k-1}, m_k, n_k, r_k)`: the TT-SVD of `W` reshaped to `(m_1 n_1, ..., m_d n_d)` (Oseledets 2010,
Novikov et al. 2015 "Tensorizing neural networks"). `tt_linear` multiplies activations by it core by core,
never rebuilding `W` and never permuting activations.

`TTMatrixLinear` has two ways to apply the cores (`contraction`): "cores" (`tt_linear`; fewest FLOPs and bytes,
the right choice on CPUs and for few rows such as decoding) and "dense" (rebuild `W` from the cores, about
`M N r` multiply-adds once per call, then one GEMM; gradients still reach only the cores). On a GPU the
core-by-core chain is a string of small, memory-bound matmuls that runs far below the tensor cores' rate, so
"auto" (the default) rebuilds there once a call has `DENSE_MIN_ROWS` rows or more (training, prefill). The
parameters are the cores either way; only the transient `W` (one projection's size) is added in memory.

Cost of `tt_linear`: the activation after core k holds `m_1..m_k * r_k * n_{k+1}..n_d` numbers per token.
`default_factors` therefore makes core 1 input-only and core d output-only with small balanced factors in
between: for a 576 x 576 projection with 3 cores at rank 16 that is 128 numbers per token (0.2x the input
width) instead of 8192 with balanced factors on both sides, for the same number of parameters.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from hf_attn.utils import HfAttnError

CONTRACTIONS = ("auto", "cores", "dense")
DENSE_MIN_ROWS = 512  # "auto" on CUDA rebuilds W from this many rows on (a conservative cut-off; docs/tt.md)

__all__ = [
    "CONTRACTIONS",
    "DENSE_MIN_ROWS",
    "TTDecomposition",
    "TTMatrixLinear",
    "default_factors",
    "factorize",
    "to_tensor_train",
    "tt_linear",
    "tt_matrix",
    "tt_matrix_to_dense",
    "tt_num_params",
    "tt_reconstruct",
]


@dataclass
class TTDecomposition:
    """Result of `to_tensor_train`: the cores, the bond ranks `(r_0=1, ..., r_d=1)` and the relative error."""

    cores: list[torch.Tensor]
    ranks: list[int]
    rel_error: float


def _check_rank(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HfAttnError(f"{name} must be an integer >= 1, got {value!r}.")


def to_tensor_train(
    tensor: torch.Tensor,
    ranks: Sequence[int] | int | None = None,
    max_rank: int | None = None,
    eps: float = 0.0,
) -> TTDecomposition:
    """TT-SVD of `tensor`: cores `(r_{k-1}, n_k, r_k)` and the relative Frobenius reconstruction error.

    `ranks`: the d-1 inner bond ranks (an int means the same for every bond), each capped at what the
    tensor's shape allows. `max_rank`: a cap on every bond. `eps`: relative error budget; each of the d-1
    SVDs drops the smallest singular values whose energy stays below `eps * ||A|| / sqrt(d-1)`, so the total
    error is <= eps (plus what the rank caps cut). With all three left at their defaults the decomposition
    is exact. The SVDs run in float64; cores come back in the input's floating dtype.
    """
    if not isinstance(tensor, torch.Tensor) or tensor.dim() < 1 or tensor.numel() == 0:
        raise HfAttnError("to_tensor_train needs a non-empty torch.Tensor with at least one dimension.")
    if eps < 0:
        raise HfAttnError(f"eps is a relative error budget and must be >= 0, got {eps}.")
    shape = list(tensor.shape)
    d = len(shape)
    if isinstance(ranks, int):
        ranks = [ranks] * (d - 1)
    if ranks is not None:
        ranks = list(ranks)
        if len(ranks) != d - 1:
            raise HfAttnError(f"A {d}-way tensor has {d - 1} inner bonds; got {len(ranks)} ranks {ranks}.")
        for r in ranks:
            _check_rank("Every TT rank", r)
    if max_rank is not None:
        _check_rank("max_rank", max_rank)

    out_dtype = tensor.dtype if tensor.is_floating_point() else torch.get_default_dtype()
    a = tensor.detach().to(torch.float64)
    norm = torch.linalg.vector_norm(a).item()
    delta2 = (eps * norm) ** 2 / max(d - 1, 1)
    cores, bonds = [], [1]
    rest = a.reshape(shape[0], -1)
    for k in range(d - 1):
        u, s, vh = torch.linalg.svd(rest, full_matrices=False)
        keep = s.numel()
        if delta2 > 0:  # smallest keep with tail energy <= delta2
            tail = torch.cumsum(s.flip(0) ** 2, 0).flip(0)  # tail[i] = sum_{j>=i} s_j^2
            keep = max(1, int((tail > delta2).sum().item()))
        if ranks is not None:
            keep = min(keep, ranks[k])
        if max_rank is not None:
            keep = min(keep, max_rank)
        cores.append(u[:, :keep].reshape(bonds[-1], shape[k], keep))
        bonds.append(keep)
        rest = (s[:keep, None] * vh[:keep]).reshape(keep * shape[k + 1], -1)
    cores.append(rest.reshape(bonds[-1], shape[-1], 1))
    bonds.append(1)
    err = torch.linalg.vector_norm(tt_reconstruct(cores) - a).item() / norm if norm > 0 else 0.0
    return TTDecomposition([c.to(out_dtype) for c in cores], bonds, err)


def tt_reconstruct(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """The dense tensor of TT cores `(r_{k-1}, n_k, r_k)` (for checks and small tensors)."""
    out = cores[0].reshape(-1, cores[0].shape[-1])  # (n_1, r_1), r_0 = 1
    for core in cores[1:]:
        out = (out @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])
    return out.reshape([c.shape[1] for c in cores])


def factorize(n: int, d: int) -> list[int]:
    """`n` as `d` integer factors, as balanced as possible (smallest largest factor), ascending."""
    _check_rank("The number of factors", d)
    if not isinstance(n, int) or n < 1:
        raise HfAttnError(f"Only a positive integer dimension can be factorised, got {n!r}.")
    best: list[int] | None = None

    def search(left: int, parts: int, low: int, acc: list[int]) -> None:
        nonlocal best
        if parts == 1:
            if left >= low:
                cand = acc + [left]
                if best is None or (cand[-1], sum(cand)) < (best[-1], sum(best)):
                    best = cand
            return
        for f in range(low, math.isqrt(left) + 1):
            if left % f == 0 and f ** (parts - 1) <= left:
                search(left // f, parts - 1, f, acc + [f])

    search(n, d, 2 if n >= 2 ** d else 1, [])
    if best is None or (d > 1 and best[0] == 1):
        raise HfAttnError(
            f"{n} cannot be split into {d} factors > 1 (it has too few prime factors); use fewer cores or pass "
            "the factors explicitly."
        )
    return best


def default_factors(out_features: int, in_features: int, num_cores: int) -> tuple[list[int], list[int]]:
    """Auto factorisation for a TT-matrix: balanced inner factors, the boundary cores one-sided.

    Both dimensions are split into `num_cores` balanced factors; the first output factor is folded into the
    last one and the last input factor into the first, so core 1 reads only input (`m_1 = 1`) and core d
    writes only output (`n_d = 1`). Every intermediate of `tt_linear` then holds about
    `rank * (dim ** (1/d)) ** (d - 2)` numbers per token (8 x rank for 576 x 576 and 3 cores) instead of
    `rank * dim ** (2/3)` with balanced factors on both sides, at the same parameter count. `num_cores=2`
    gives the plain rank-r factorisation `W = U V`.
    """
    _check_rank("num_cores", num_cores)
    if num_cores <= 2:  # one core: the dense matrix; two: W = U V
        return ([out_features], [in_features]) if num_cores == 1 else ([1, out_features], [in_features, 1])
    f = factorize(out_features, num_cores)
    g = factorize(in_features, num_cores)[::-1]
    return [1, *f[1:-1], f[0] * f[-1]], [g[0] * g[-1], *g[1:-1], 1]


def _check_factors(out_features: int, in_features: int, out_factors: Sequence[int], in_factors: Sequence[int]) -> None:
    if len(out_factors) != len(in_factors) or not out_factors:
        raise HfAttnError(
            f"out_factors {list(out_factors)} and in_factors {list(in_factors)} need the same, non-zero length "
            "(one pair per core)."
        )
    for name, factors, dim in (("out_factors", out_factors, out_features), ("in_factors", in_factors, in_features)):
        if any(not isinstance(f, int) or f < 1 for f in factors) or math.prod(factors) != dim:
            raise HfAttnError(
                f"{name}={list(factors)} must be positive integers whose product is the dimension {dim} "
                f"(e.g. {factorize(dim, len(factors)) if dim >= 2 ** len(factors) else [dim]})."
            )


def tt_matrix(
    weight: torch.Tensor,
    out_factors: Sequence[int],
    in_factors: Sequence[int],
    ranks: Sequence[int] | int | None = None,
    max_rank: int | None = None,
    eps: float = 0.0,
) -> TTDecomposition:
    """TT-SVD of a `(M, N)` weight as a TT-matrix: cores `(r_{k-1}, m_k, n_k, r_k)`; error relative to `weight`."""
    if weight.dim() != 2:
        raise HfAttnError(f"tt_matrix needs a 2-D weight (out, in), got shape {tuple(weight.shape)}.")
    _check_factors(weight.shape[0], weight.shape[1], out_factors, in_factors)
    d = len(out_factors)
    # (m_1..m_d, n_1..n_d) -> (m_1, n_1, m_2, n_2, ...) -> (m_1 n_1, ..., m_d n_d)
    t = weight.reshape(*out_factors, *in_factors)
    t = t.permute(*itertools.chain.from_iterable((k, d + k) for k in range(d)))
    t = t.reshape([m * n for m, n in zip(out_factors, in_factors)])
    dec = to_tensor_train(t, ranks=ranks, max_rank=max_rank, eps=eps)
    dec.cores = [c.reshape(c.shape[0], m, n, c.shape[-1]) for c, m, n in zip(dec.cores, out_factors, in_factors)]
    return dec


def tt_matrix_to_dense(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """The `(M, N)` matrix of TT-matrix cores `(r_{k-1}, m_k, n_k, r_k)` (used by merge and tests)."""
    d = len(cores)
    full = tt_reconstruct([c.reshape(c.shape[0], -1, c.shape[-1]) for c in cores])
    full = full.reshape(list(itertools.chain.from_iterable((c.shape[1], c.shape[2]) for c in cores)))
    full = full.permute(*range(0, 2 * d, 2), *range(1, 2 * d, 2))
    return full.reshape(math.prod(c.shape[1] for c in cores), math.prod(c.shape[2] for c in cores))


def tt_num_params(cores: Sequence[torch.Tensor]) -> int:
    """Total number of parameters in a chain of TT cores."""
    return sum(c.numel() for c in cores)


def tt_linear(x: torch.Tensor, cores: Sequence[torch.Tensor], bias: torch.Tensor | None = None) -> torch.Tensor:
    """`x @ W.T (+ bias)` for the TT-matrix `W` of `cores`, contracting one core at a time.

    The state before core k is `(rows * m_1..m_{k-1}, r_{k-1} * n_k, n_{k+1}..n_d)`, contiguous. Core k as
    a `(m_k r_k, r_{k-1} n_k)` matrix maps it to `(rows * m_1..m_k, r_k * n_{k+1}, ...)`: a plain GEMM when
    nothing is left on the right (always the last core; with `default_factors` every core after the first),
    else one strided batched matmul over the rows. Activations are never permuted or copied, so autograd
    saves views of `x`, not copies.
    """
    lead = x.shape[:-1]
    n_in = math.prod(c.shape[2] for c in cores)
    if x.shape[-1] != n_in:
        raise HfAttnError(f"tt_linear: input has {x.shape[-1]} features, the TT-matrix expects {n_in}.")
    state, rest = x.reshape(-1, n_in), n_in
    for core in cores:
        r0, m, n, r1 = core.shape
        rest //= n
        mat = core.permute(1, 3, 0, 2).reshape(m * r1, r0 * n)  # (m_k r_k, r_{k-1} n_k)
        if rest == 1:
            state = (state.reshape(-1, r0 * n) @ mat.t()).reshape(-1, r1)  # (rows * m_1..m_k, r_k)
        else:
            s = state.reshape(-1, r0 * n, rest)
            state = torch.bmm(mat.expand(s.shape[0], -1, -1), s).reshape(-1, r1 * rest)
    out = state.reshape(*lead, -1)
    return out if bias is None else out + bias


def check_contraction(value: str) -> None:
    """Refuse a contraction mode other than those in `CONTRACTIONS`."""
    if value not in CONTRACTIONS:
        raise HfAttnError(f"contraction must be one of {', '.join(CONTRACTIONS)}; got {value!r}.")


class TTMatrixLinear(torch.nn.Module):
    """A linear layer whose weight is a TT-matrix (the cores are its only weight parameters).

    Build it from a dense weight with `from_weight` (TT-SVD initialisation) or randomly with the constructor.
    Factors default to `default_factors(out_features, in_features, num_cores)`. `contraction` picks how the
    cores are applied (module docstring): "cores" (`tt_linear`), "dense" (rebuild W, one GEMM) or "auto".
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        num_cores: int = 3,
        out_factors: Sequence[int] | None = None,
        in_factors: Sequence[int] | None = None,
        bias: bool = True,
        contraction: str = "auto",
    ):
        super().__init__()
        _check_rank("rank", rank)
        check_contraction(contraction)
        self.contraction = contraction
        if out_factors is None and in_factors is None:
            out_factors, in_factors = default_factors(out_features, in_features, num_cores)
        elif out_factors is None or in_factors is None:
            raise HfAttnError("Pass both out_factors and in_factors, or neither (automatic factorisation).")
        _check_factors(out_features, in_features, out_factors, in_factors)
        self.in_features, self.out_features = in_features, out_features
        self.out_factors, self.in_factors = list(out_factors), list(in_factors)
        bonds = _bond_ranks(self.out_factors, self.in_factors, rank)
        cores = []
        for k, (m, n) in enumerate(zip(self.out_factors, self.in_factors)):
            core = torch.randn(bonds[k], m, n, bonds[k + 1]) / math.sqrt(bonds[k] * n)
            cores.append(torch.nn.Parameter(core))
        self.cores = torch.nn.ParameterList(cores)
        self.bias = torch.nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_weight(
        cls,
        weight: torch.Tensor,
        rank: int,
        num_cores: int = 3,
        out_factors: Sequence[int] | None = None,
        in_factors: Sequence[int] | None = None,
        bias: torch.Tensor | None = None,
        contraction: str = "auto",
    ) -> tuple["TTMatrixLinear", float]:
        """TT-SVD initialisation from a dense `(out, in)` weight; returns the layer and its relative error."""
        layer = cls(weight.shape[1], weight.shape[0], rank, num_cores, out_factors, in_factors, bias is not None,
                    contraction)
        dec = tt_matrix(weight, layer.out_factors, layer.in_factors, max_rank=rank)
        with torch.no_grad():
            for p, c in zip(layer.cores, dec.cores):
                p.copy_(c)  # shapes agree: _bond_ranks is what the rank-capped TT-SVD keeps
            if bias is not None:
                layer.bias.copy_(bias)
        return layer.to(device=weight.device, dtype=weight.dtype), dec.rel_error

    @property
    def ranks(self) -> list[int]:
        """The bond ranks `[1, r_1, ..., r_d]`."""
        return [1] + [c.shape[-1] for c in self.cores]

    def to_dense(self) -> torch.Tensor:
        """The `(out, in)` weight these cores stand for."""
        return tt_matrix_to_dense(list(self.cores))

    def rebuilds(self, x: torch.Tensor) -> bool:
        """Whether this call applies the rebuilt dense matrix rather than the core chain."""
        if self.contraction != "auto":
            return self.contraction == "dense"
        return x.is_cuda and x.numel() >= DENSE_MIN_ROWS * self.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x W^T + b` with W in TT format: the core chain, or one GEMM on W rebuilt from the cores."""
        if self.rebuilds(x):
            return F.linear(x, self.to_dense(), self.bias)
        return tt_linear(x, list(self.cores), self.bias)

    def extra_repr(self) -> str:
        """Shapes, factors, ranks and contraction mode, for `print(model)`."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, out_factors={self.out_factors}, "
            f"in_factors={self.in_factors}, ranks={self.ranks}, bias={self.bias is not None}, "
            f"contraction={self.contraction}"
        )


def _bond_ranks(out_factors: Sequence[int], in_factors: Sequence[int], rank: int) -> list[int]:
    """Bond ranks a rank-`rank` TT-SVD keeps: each capped by the sizes on both sides of the bond."""
    sizes = [m * n for m, n in zip(out_factors, in_factors)]
    return [1] + [min(rank, math.prod(sizes[: k + 1]), math.prod(sizes[k + 1 :])) for k in range(len(sizes) - 1)] + [1]
