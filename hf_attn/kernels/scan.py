"""Exclusive scan over per-block states: the step between the chunked kernels' two passes (holo, performer).

Pass 1 of a chunked kernel writes one state per block of tokens; every block of pass 2 needs the sum of all
earlier blocks' states (the backward: of all later ones). One launch does it in place, instead of torch's
strided `cumsum` plus the elementwise ops around it (0.9 ms of performer's 5.6 ms fwd+bwd at 16k tokens on
the H100, measured with `recipes/bench/profile_kernels.py`).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

TILE = 4096  # elements per program and step: BW state columns x CB blocks
WARPS = 2  # fastest on the H100 at every shape `recipes/bench/tune_scan.py` tries (4 and 8 were up to 2x slower for bf16)


@triton.jit
def _scan_blocks(x_ptr, init_ptr, total_ptr, NB, W, BW: tl.constexpr, CB: tl.constexpr,
                 REVERSE: tl.constexpr, HAS_INIT: tl.constexpr):
    """In place over `x (rows, NB, W)`: `x[:, i] <- init + sum_{j<i} x[:, j]` (REVERSE: `sum_{j>i}`), and
    `total = init + sum_j x[:, j]`. Program `(row, column block)` walks the blocks in chunks of `CB`; each
    chunk is read before it is overwritten, so in place is safe."""
    row = tl.program_id(0)
    w = tl.program_id(1) * BW + tl.arange(0, BW)
    w_ok = w < W
    if HAS_INIT:
        carry = tl.load(init_ptr + row * W + w, mask=w_ok, other=0.0)
    else:
        carry = tl.zeros((BW,), dtype=tl.float32)
    for c0 in range(0, NB, CB):
        n = c0 + tl.arange(0, CB)
        if REVERSE:
            i = NB - 1 - n
        else:
            i = n
        ok = (n < NB)[:, None] & w_ok[None, :]
        ptr = x_ptr + (row * NB + i)[:, None].to(tl.int64) * W + w[None, :]
        x = tl.load(ptr, mask=ok, other=0.0).to(tl.float32)
        tl.store(ptr, (tl.cumsum(x, axis=0) - x + carry[None, :]).to(x_ptr.dtype.element_ty), mask=ok)
        carry += tl.sum(x, axis=0)
    tl.store(total_ptr + row * W + w, carry, mask=w_ok)


def column_block(width: int) -> int:
    """State columns per program: half the state width, within [32, 512]. Narrow holo states (64 floats) scan
    fastest split over two programs of 32 columns with 128 blocks per step, performer's wide ones (m x D) in
    512-column programs with 8 blocks per step (`recipes/bench/tune_scan.py`; docs/kernels.md has the figures)."""
    return max(32, min(triton.next_power_of_2(width) // 2, 512))


def scan_blocks_(x: torch.Tensor, init: torch.Tensor | None = None, reverse: bool = False) -> torch.Tensor:
    """Exclusive scan of `x (rows, NB, *state)` (fp32 or bf16, contiguous) over its blocks, in place, on top of
    `init (rows, *state)`; returns the fp32 total `(rows, *state)` (the final state, or the initial state's
    gradient). Sums are fp32 whatever `x` holds: a bf16 `x` is rounded once, on the way back."""
    rows, nb = x.shape[:2]
    w = math.prod(x.shape[2:])
    total = x.new_empty(rows, *x.shape[2:], dtype=torch.float32)
    if not rows or not w:
        return total
    if init is not None:
        init = init.reshape(rows, w).float().contiguous()
    bw = column_block(w)
    _scan_blocks[(rows, triton.cdiv(w, bw))](x, x if init is None else init, total, nb, w, BW=bw, CB=TILE // bw,
                                             REVERSE=reverse, HAS_INIT=init is not None, num_warps=WARPS)
    return total
