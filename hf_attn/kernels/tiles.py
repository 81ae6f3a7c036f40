"""Tile loads and input layout shared by the holo and performer kernels."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def load_rows(ptr, t, stride_t, d, T, D):
    """`(len(t), len(d))` fp32 tile of rows `t`, columns `d`, zero outside `t < T`, `d < D`."""
    return tl.load(ptr + t[:, None] * stride_t + d[None, :], mask=(t[:, None] < T) & (d[None, :] < D), other=0.0).to(
        tl.float32
    )


def unit_last_stride(x: torch.Tensor) -> torch.Tensor:
    """`x` itself when its rows are contiguous (the kernels take any other strides), else a contiguous copy."""
    return x if x.stride(-1) == 1 else x.contiguous()
