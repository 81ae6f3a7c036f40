"""How a head's dimensions split into SO(3) irrep blocks (`irrep_spec`), parsed and checked once.

A spec lists `multiplicity x l` terms, written `"5x0+3x1+1x2"` (the default: five scalars,
three vectors, one rank-2 tensor = 19 dimensions) or as `[(5, 0), (3, 1), (1, 2)]`. The blocks fill the head
from dimension 0 in spec order; the rest of `head_dim` is one more scalar (l = 0) block, the "rest block".
`irrep_spec=None` means that default, shrunk for heads narrower than 19 dimensions by keeping blocks
in the order l2, l1, l0 (head_dim 16 -> 2x0+3x1+1x2, head_dim 8 -> 1x1+1x2), so every model runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence, Union

from ...utils import HfAttnError
from .so3 import MAX_L

DEFAULT_IRREP_SPEC = "5x0+3x1+1x2"
IrrepSpecLike = Union[str, Sequence[Sequence[int]], None]


@dataclass(frozen=True)
class Block:
    """One irrep block of a head: degree `l` and the dimensions `[start, start + dim)` it occupies."""

    l: int
    start: int
    dim: int

    @property
    def stop(self) -> int:
        """One past the block's last dimension."""
        return self.start + self.dim


@dataclass(frozen=True)
class IrrepLayout:
    """The blocks of one head: the spec's blocks in order, then the rest block (l = 0) if any dims remain."""

    head_dim: int
    spec: tuple[tuple[int, int], ...]  # (multiplicity, l)

    @property
    def blocks(self) -> tuple[Block, ...]:
        """The blocks in spec order from dimension 0, then the scalar rest block if the spec leaves dimensions over.
        """
        out, start = [], 0
        for mult, l in self.spec:
            for _ in range(mult):
                out.append(Block(l, start, 2 * l + 1))
                start += 2 * l + 1
        if start < self.head_dim:
            out.append(Block(0, start, self.head_dim - start))
        return tuple(out)

    @property
    def n_blocks(self) -> int:
        """Number of blocks, the rest block included."""
        return len(self.blocks)

    def block_of_dim(self) -> list[int]:
        """Block index of every head dimension (used to expand per-block variances to per-dimension)."""
        return [i for i, b in enumerate(self.blocks) for _ in range(b.dim)]

    def labels(self) -> list[str]:
        """`l0`, `l1`, ... per block (`l0(rest)` for the rest block), for diagnostics and plots."""
        return [f"l{b.l}" + ("(rest)" if i == len(self.blocks) - 1 and self._has_rest else "")
                for i, b in enumerate(self.blocks)]

    @property
    def _has_rest(self) -> bool:
        return sum(m * (2 * l + 1) for m, l in self.spec) < self.head_dim

    def __str__(self) -> str:
        return "+".join(f"{m}x{l}" for m, l in self.spec) or "none"


def parse_irrep_spec(spec: IrrepSpecLike) -> tuple[tuple[int, int], ...] | None:
    """`"5x0+3x1+1x2"` or `[(5, 0), (3, 1), (1, 2)]` -> `((5, 0), (3, 1), (1, 2))`; None stays None."""
    if spec is None:
        return None
    if isinstance(spec, str):
        terms = [t.strip() for t in spec.replace(" ", "").split("+") if t.strip()]
        pairs = []
        for t in terms:
            m = re.fullmatch(r"(\d+)x[lℓ]?(-?\d+)", t)
            if m is None:
                raise HfAttnError(
                    f"irrep_spec term {t!r} is not 'MULTxL' (e.g. '5x0+3x1+1x2': five l=0, three l=1, one l=2)."
                )
            pairs.append((int(m.group(1)), int(m.group(2))))
    else:
        try:
            pairs = [(int(m), int(l)) for m, l in spec]
        except (TypeError, ValueError):
            raise HfAttnError(
                f"irrep_spec {spec!r} must be a string like '5x0+3x1+1x2' or pairs (multiplicity, l)."
            ) from None
    if not pairs:
        raise HfAttnError("irrep_spec is empty; give at least one 'MULTxL' term or None for the default.")
    for mult, l in pairs:
        if not 0 <= l <= MAX_L:
            raise HfAttnError(f"irrep_spec: unknown l={l}; hf-attn builds Wigner-D matrices for l = 0..{MAX_L}.")
        if mult < 1:
            raise HfAttnError(f"irrep_spec: multiplicity of l={l} must be >= 1, got {mult}.")
    return tuple(pairs)


def _fit_default(head_dim: int) -> tuple[tuple[int, int], ...]:
    wanted = dict((l, m) for m, l in parse_irrep_spec(DEFAULT_IRREP_SPEC))
    room, keep = head_dim, {}
    for l in sorted(wanted, reverse=True):
        keep[l] = min(wanted[l], room // (2 * l + 1))
        room -= keep[l] * (2 * l + 1)
    return tuple((keep[l], l) for l in sorted(keep) if keep[l])


def irrep_layout(head_dim: int, spec: IrrepSpecLike = None) -> IrrepLayout:
    """Checked layout of `spec` in a head of `head_dim` dimensions (None: the fitted default)."""
    pairs = parse_irrep_spec(spec)
    if pairs is None:
        return IrrepLayout(head_dim, _fit_default(head_dim))
    used = sum(m * (2 * l + 1) for m, l in pairs)
    if used > head_dim:
        raise HfAttnError(
            f"irrep_spec {'+'.join(f'{m}x{l}' for m, l in pairs)} needs {used} dimensions but head_dim is "
            f"{head_dim}; drop blocks (an l block takes 2l+1 dims) or use irrep_spec=None for the fitted default."
        )
    return IrrepLayout(head_dim, pairs)
