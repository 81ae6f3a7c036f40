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

from .launch import launch

TILE = 4096  # elements per program and step: BW state columns x CB blocks
WARPS = 2  # fastest on the H100 at every shape `recipes/bench/tune_scan.py` tries (4 and 8 were up to 2x slower for bf16)


@triton.jit
def _scan_columns(x_ptr, init_ptr, total_ptr, row, col_block, NB, W, BW: tl.constexpr, CB: tl.constexpr,
                  REVERSE: tl.constexpr, HAS_INIT: tl.constexpr):
    """In place over `x (rows, NB, W)`, row `row`, columns `col_block * BW + [0, BW)`:
    `x[:, i] <- init + sum_{j<i} x[:, j]` (REVERSE: `sum_{j>i}`), and `total = init + sum_j x[:, j]`. The
    blocks are walked in chunks of `CB`; each chunk is read before it is overwritten, so in place is safe."""
    w = col_block * BW + tl.arange(0, BW)
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


@triton.jit
def _scan_blocks(x_ptr, init_ptr, total_ptr, y_ptr, y_init_ptr, y_total_ptr, NB, W, WY, NCX,
                 BW: tl.constexpr, CB: tl.constexpr, BWY: tl.constexpr, CBY: tl.constexpr,
                 REVERSE: tl.constexpr, HAS_INIT: tl.constexpr):
    """Program `(row, column block)`: the first `NCX` column blocks scan `x (rows, NB, W)`, the rest the
    second state `y (rows, NB, WY)` of a pair (performer's `S` and `z`), so a pair costs one launch."""
    row, col_block = tl.program_id(0), tl.program_id(1)
    if col_block < NCX:
        _scan_columns(x_ptr, init_ptr, total_ptr, row, col_block, NB, W, BW, CB, REVERSE, HAS_INIT)
    else:
        _scan_columns(y_ptr, y_init_ptr, y_total_ptr, row, col_block - NCX, NB, WY, BWY, CBY, REVERSE, HAS_INIT)


def column_block(width: int) -> int:
    """State columns per program: half the state width, within [32, 512]. Narrow holo states (64 floats) scan
    fastest split over two programs of 32 columns with 128 blocks per step, performer's wide ones (m x D) in
    512-column programs with 8 blocks per step (`recipes/bench/tune_scan.py`; docs/kernels.md has the figures)."""
    return max(32, min(triton.next_power_of_2(width) // 2, 512))


def scan_blocks_(*states: torch.Tensor, inits: tuple[torch.Tensor, ...] | None = None,
                 reverse: bool = False) -> list[torch.Tensor]:
    """Exclusive scan of each `x (rows, NB, *state)` in `states` (one, or a pair with the same rows and blocks;
    fp32 or bf16, contiguous) over its blocks, in place, on top of the matching `inits (rows, *state)`, in one
    launch. Returns each state's fp32 total `(rows, *state)` (the final state, or the initial state's gradient).
    Sums are fp32 whatever `x` holds: a bf16 `x` is rounded once, on the way back."""
    if len(states) not in (1, 2) or (inits is not None and len(inits) != len(states)):
        raise ValueError(f"scan_blocks_ takes one or two states with as many inits, got {len(states)} and "
                         f"{None if inits is None else len(inits)}.")
    rows, nb = states[0].shape[:2]
    totals = [x.new_empty(rows, *x.shape[2:], dtype=torch.float32) for x in states]
    x, y = states[0], states[-1]  # one state scans as x, with no column blocks of y
    wx, wy = math.prod(x.shape[2:]), math.prod(y.shape[2:]) if len(states) == 2 else 0
    if not rows or not wx + wy:
        return totals
    ix, iy = (x, y) if inits is None else (i.reshape(rows, -1).float().contiguous() for i in (inits[0], inits[-1]))
    bw, bwy = column_block(wx), column_block(wy)
    ncx = triton.cdiv(wx, bw)
    launch(_scan_blocks, (rows, ncx + triton.cdiv(wy, bwy)), x, ix, totals[0], y, iy, totals[-1], nb, wx, wy, ncx,
           BW=bw, CB=TILE // bw, BWY=bwy, CBY=TILE // bwy, REVERSE=reverse, HAS_INIT=inits is not None,
           num_warps=WARPS, num_stages=3)
    return totals
